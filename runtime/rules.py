"""The rules the protos declare on request fields (`ticketing.common.v1.rules`).

The services take their limits from here rather than restating them, and
scripts/openapi.py writes the same declarations into the OpenAPI document,
so what the document promises is what the servers check.
"""

from __future__ import annotations

from google.protobuf.message import Message

from ticketing.common.v1 import rules_pb2


def field_rules(message: type[Message], field: str) -> rules_pb2.FieldRules:
    """The rules declared on `message.field` (all unset if none are)."""
    options = message.DESCRIPTOR.fields_by_name[field].GetOptions()
    return options.Extensions[rules_pb2.rules]
