"""The rules the protos declare on request fields (`ticketing.common.v1.rules`).

The services take their limits from here rather than restating them, and
scripts/openapi.py writes the same declarations into the OpenAPI document,
so what the document promises is what the servers check.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ticketing.common.v1 import rules_pb2


def field_rules(message: type[Message], field: str) -> rules_pb2.FieldRules:
    """The rules declared on `message.field` (all unset if none are)."""
    return declared_rules(message.DESCRIPTOR.fields_by_name[field])


def declared_rules(field: FieldDescriptor) -> rules_pb2.FieldRules:
    """A field's rules, or those of the field its `same_as` names."""
    rules = field.GetOptions().Extensions[rules_pb2.rules]
    if rules.same_as:
        return declared_rules(descriptor_pool.Default().FindFieldByName(rules.same_as))
    return rules
