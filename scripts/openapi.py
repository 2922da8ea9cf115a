"""Generates the OpenAPI 3 document of the HTTP/JSON surface from the protos.

Paths come from the `google.api.http` annotations, schemas from the messages
(in the proto3 JSON mapping Envoy's transcoder uses: proto field names, int64
as strings, enums by name), required/read-only from `google.api.field_behavior`,
lengths, ranges, patterns and formats from `ticketing.common.v1.rules` (the
declarations the services read their limits from) and the rules every request
meets (runtime.validation), error responses from `ticketing.common.v1.errors`
and the access rule, security from `ticketing.common.v1.access`, descriptions
from the proto comments. So a request the document calls valid passes every
check a single field can state; the rules that span fields or depend on the
clock are in the descriptions. `make protos` writes gen/openapi.json; Envoy
serves it at /openapi.json.

    python scripts/openapi.py gen/descriptors.binpb > gen/openapi.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.rpc import code_pb2

from runtime.contracts import PROTO_SERVICES, http_binding
from runtime.currencies import ISO_4217
from runtime.rules import declared_rules
from runtime.validation import (
    CONTROL_CHARS,
    CONTROL_CHARS_BUT_WHITESPACE,
    MAX_TEXT_CHARS,
    MULTILINE_FIELDS,
)
from ticketing.common.v1 import access_pb2, rules_pb2

INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    # 64-bit integers are JSON strings in the proto3 JSON mapping; 18 digits
    # stay inside int64 whatever they are.
    FieldDescriptor.TYPE_INT64: {
        "type": "string",
        "format": "int64",
        "pattern": r"^-?[0-9]{1,18}$",
    },
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
# RFC 3339 as protobuf's JSON parser takes it: upper-case T and Z, an offset
# in hours and minutes, at most nanoseconds.
RFC3339 = (
    # Years 0001 to 9999, a Timestamp's range.
    r"^([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"
    r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time", "pattern": RFC3339},
    "google.protobuf.Duration": {"type": "string"},
    # Field paths, comma-separated (the proto3 JSON mapping of a FieldMask).
    "google.protobuf.FieldMask": {"type": "string", "pattern": "^[a-z_]+(,[a-z_]+)*$"},
}
# What str.strip() removes besides the control characters, which no text may hold.
SPACES = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT = f"^[^{CONTROL_CHARS}]*$"
MULTILINE_TEXT = f"^[^{CONTROL_CHARS_BUT_WHITESPACE}]*$"
NOT_BLANK = f"^[^{CONTROL_CHARS}]*[^{CONTROL_CHARS}{SPACES}][^{CONTROL_CHARS}]*$"
FORMATS: dict[int, dict[str, Any]] = {
    rules_pb2.FORMAT_UUID: {"format": "uuid"},
    rules_pb2.FORMAT_EMAIL: {"format": "email"},
    rules_pb2.FORMAT_CURRENCY_CODE: {"enum": sorted(ISO_4217)},
}
# The HTTP status Envoy's transcoder answers each gRPC code with.
HTTP_STATUS = {
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.ABORTED: 409,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DEADLINE_EXCEEDED: 504,
}
# Codes any routed RPC may answer (rules.proto), and those a token brings.
ANY_RPC = (
    code_pb2.INVALID_ARGUMENT,
    code_pb2.FAILED_PRECONDITION,
    code_pb2.RESOURCE_EXHAUSTED,
    code_pb2.UNAVAILABLE,
    code_pb2.DEADLINE_EXCEEDED,
)
SIGNED_IN = (code_pb2.UNAUTHENTICATED, code_pb2.PERMISSION_DENIED)
ERROR_RESPONSES = {
    400: "Bad input (a google.rpc.BadRequest names the fields) or a failed precondition "
    "(the ErrorInfo reason says which, e.g. PAYMENT_DECLINED)",
    401: "No valid access token, or wrong credentials",
    403: "The caller's role or ownership does not allow it",
    404: "No such resource, or no such route",
    409: "A conflict: seats taken, an email already registered",
    413: "The request body is too large",
    429: "Too many requests; retry later",
    503: "A service or its store is unavailable; retry",
    504: "The request timed out",
}
ERROR_SCHEMA = {
    "type": "object",
    "description": "A google.rpc.Status: the gRPC code, a message, and details such as "
    "google.rpc.ErrorInfo (its `reason`) and google.rpc.BadRequest.",
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["code", "message"],
}


def comments(descriptor_set: Path) -> dict[str, str]:
    """Leading comments by full name, from the descriptor set's source info."""
    found: dict[str, str] = {}
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    for file in files:
        names: dict[tuple[int, ...], str] = {}
        for i, message in enumerate(file.message_type):
            names[(4, i)] = f"{file.package}.{message.name}"
            for j, field in enumerate(message.field):
                names[(4, i, 2, j)] = f"{file.package}.{message.name}.{field.name}"
        for i, service in enumerate(file.service):
            for j, method in enumerate(service.method):
                names[(6, i, 2, j)] = f"{file.package}.{service.name}.{method.name}"
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            if name and location.leading_comments.strip():
                found[name] = " ".join(location.leading_comments.split())
    return found


def digits_between(low: int, high: int) -> str:
    """A pattern for the decimal strings of low..high, for the bounds the protos
    use: low 0 or 1, high a power of ten."""
    digits = len(str(high)) - 1
    if low not in (0, 1) or high != 10**digits or digits < 1:
        raise ValueError(f"no pattern for the range {low}..{high}")
    zero = "0|" if low == 0 else ""
    return f"^(?:{zero}[1-9][0-9]{{0,{digits - 1}}}|1{'0' * digits})$"


def behaviors(field: FieldDescriptor) -> list[int]:
    return list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def string_schema(field: FieldDescriptor, rules: rules_pb2.FieldRules, required: bool) -> dict:
    schema: dict[str, Any] = {"type": "string", **FORMATS.get(rules.format, {})}
    if rules.pattern:
        schema["pattern"] = rules.pattern
    elif not rules.format:
        if rules.not_blank:
            schema["pattern"] = NOT_BLANK
        else:
            schema["pattern"] = MULTILINE_TEXT if field.name in MULTILINE_FIELDS else TEXT
    if rules.format in (rules_pb2.FORMAT_UUID, rules_pb2.FORMAT_CURRENCY_CODE):
        return schema  # the format fixes the length
    if rules.min_len or required:
        schema["minLength"] = max(rules.min_len, 1)
    schema["maxLength"] = rules.max_len or MAX_TEXT_CHARS
    return schema


def bound(schema: dict[str, Any], rules: rules_pb2.FieldRules) -> None:
    """Declared bounds on a number; on an int64, which JSON carries as a string, as a pattern."""
    if not (rules.HasField("gte") or rules.HasField("lte")):
        return
    if schema.get("format") == "int64":
        schema["pattern"] = digits_between(rules.gte, rules.lte)
        return
    if rules.HasField("gte"):
        schema["minimum"] = rules.gte
    if rules.HasField("lte"):
        schema["maximum"] = rules.lte


def nullable(properties: dict[str, Any]) -> dict[str, Any]:
    return {name: {"anyOf": [value, {"type": "null"}]} for name, value in properties.items()}


def error_statuses(method: MethodDescriptor) -> list[int]:
    options = method.GetOptions()
    codes = [*ANY_RPC, *options.Extensions[rules_pb2.errors].codes]
    if options.Extensions[access_pb2.access] != access_pb2.ACCESS_PUBLIC:
        codes += SIGNED_IN
    statuses = {HTTP_STATUS[code] for code in codes}
    if http_binding(method)[2]:  # a body, which Envoy caps
        statuses.add(413)
    return sorted(statuses)


class Document:
    """Schemas come in two kinds: what a request may carry (lenient about extra
    fields, as the transcoder drops them; enums by name or number; every rule
    the servers check) and what a response holds (exactly the documented
    fields, enums by name)."""

    def __init__(self, descriptions: dict[str, str]) -> None:
        self.descriptions = descriptions
        self.schemas: dict[str, Any] = {"google.rpc.Status": ERROR_SCHEMA}

    def ref(self, message: Descriptor, request: bool) -> dict[str, Any]:
        if message.full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[message.full_name])
        name = message.full_name + ("Input" if request else "")
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder against recursion
            self.schemas[name] = self.object_schema(message, request)
        return {"$ref": f"#/components/schemas/{name}"}

    def object_schema(
        self, message: Descriptor, request: bool, skip: set[str] | None = None
    ) -> dict[str, Any]:
        properties, required = {}, []
        for field in message.fields:
            output_only = field_behavior_pb2.OUTPUT_ONLY in behaviors(field)
            if (skip and field.name in skip) or (request and output_only):
                continue
            schema = self.field_schema(field, request)
            if output_only:
                schema["readOnly"] = True
            if field_behavior_pb2.REQUIRED in behaviors(field):
                required.append(field.name)
            description = self.descriptions.get(field.full_name)
            if description:
                schema["description"] = description
            properties[field.name] = schema
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if request:
            # The transcoder drops a field the message does not have, but
            # refuses one without a name.
            schema["propertyNames"] = {"minLength": 1}
        else:
            schema["additionalProperties"] = False
        if required:
            schema["required"] = required
        if self.descriptions.get(message.full_name):
            schema["description"] = self.descriptions[message.full_name]
        return schema

    def field_schema(self, field: FieldDescriptor, request: bool) -> dict[str, Any]:
        """The field's JSON shape and what a server accepts in it: its declared
        rules, REQUIRED as non-empty, and (in a request) the rules every text meets."""
        rules = declared_rules(field)
        required = field_behavior_pb2.REQUIRED in behaviors(field)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            item = self.ref(field.message_type, request)
            if rules.HasField("gte") or rules.HasField("lte"):
                item = self.money_schema(field.message_type, rules, request)
            elif rules.pattern:  # a FieldMask naming the paths an update takes
                item = {**item, "pattern": rules.pattern}
        elif field.type == FieldDescriptor.TYPE_ENUM:
            values = field.enum_type.values
            if required:  # its _UNSPECIFIED value is no value
                values = [v for v in values if v.number != 0]
            item = {"type": "string", "enum": [v.name for v in values]}
            if request:  # the proto3 JSON mapping reads a value's number too
                item = {
                    "type": ["string", "integer"],
                    "enum": item["enum"] + [v.number for v in values],
                }
        elif field.type == FieldDescriptor.TYPE_STRING and request:
            item = string_schema(field, rules, required and not field.is_repeated)
        else:
            item = dict(SCALARS[field.type])
            bound(item, rules)
        if (
            request
            and not required
            and not field.is_repeated
            and field.type != FieldDescriptor.TYPE_MESSAGE
        ):
            # The proto3 JSON mapping reads null as the field's default: leaving
            # an optional field out.
            types = item["type"] if isinstance(item["type"], list) else [item["type"]]
            item["type"] = [*types, "null"]
            if "enum" in item:
                item["enum"] = [*item["enum"], None]
        if not field.is_repeated:
            return item
        schema: dict[str, Any] = {"type": "array", "items": item}
        if rules.min_items or required:
            schema["minItems"] = max(rules.min_items, 1)
        if rules.max_items:
            schema["maxItems"] = rules.max_items
        if rules.unique_items:
            schema["uniqueItems"] = True
        return schema

    def money_schema(
        self, money: Descriptor, rules: rules_pb2.FieldRules, request: bool
    ) -> dict[str, Any]:
        """A Money whose amount the field bounds (a tier's price), spelled out in place."""
        schema = self.object_schema(money, request)
        bound(schema["properties"]["amount_minor"], rules)
        return schema

    def reply_content(self, method: MethodDescriptor) -> dict[str, Any]:
        """JSON, except for an RPC answering a google.api.HttpBody: the transcoder
        sends that body as it is, with its content type (a PDF's is all there is)."""
        if method.output_type.full_name == "google.api.HttpBody":
            return {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}
        return {"application/json": {"schema": self.ref(method.output_type, request=False)}}

    def path_schema(self, message: Descriptor, name: str) -> dict[str, Any]:
        """A path parameter's schema; `event.event_id` names a field of a field."""
        *outer, last = name.split(".")
        for part in outer:
            message = message.fields_by_name[part].message_type
        field = message.fields_by_name[last]
        if field_behavior_pb2.OUTPUT_ONLY in behaviors(field):  # the resource's own id
            return {"type": "string", "format": "uuid"}
        return self.field_schema(field, request=True)

    def operation(
        self, method: MethodDescriptor, template: str, body: str, verb: str = ""
    ) -> dict[str, Any]:
        message = method.input_type
        path_fields = set(re.findall(r"\{([^}=]+)", template))
        parameters = [
            {
                "name": name.rsplit(".", 1)[-1],
                "in": "path",
                "required": True,
                "schema": self.path_schema(message, name),
            }
            for name in sorted(path_fields)
        ]
        operation: dict[str, Any] = {
            "operationId": f"{method.containing_service.name}_{method.name}",
            "tags": [method.containing_service.name],
            "summary": self.descriptions.get(method.full_name, method.name),
            "responses": {
                "200": {"description": "OK", "content": self.reply_content(method)},
                **{
                    str(status): {"$ref": f"#/components/responses/{status}"}
                    for status in error_statuses(method)
                },
            },
        }
        if body:
            # The transcoder takes a missing body as an empty message, which
            # will do when nothing in it is required.
            if body == "*":
                schema = self.object_schema(message, request=True, skip=path_fields)
                required = bool(schema.get("required"))
                if not required:
                    # A body of options only (a reason, say): null is an option
                    # not given, as the transcoder reads it.
                    schema["properties"] = nullable(schema["properties"])
            else:
                field = message.fields_by_name[body]
                schema = self.field_schema(field, request=True)
                required = field_behavior_pb2.REQUIRED in behaviors(field)
                if verb == "PATCH":
                    # An update carries only the fields its mask names (AIP-134),
                    # and null for one it clears.
                    schema = self.object_schema(field.message_type, request=True)
                    schema.pop("required", None)
                    schema["properties"] = nullable(schema["properties"])
            operation["requestBody"] = {
                "required": required,
                "content": {"application/json": {"schema": schema}},
            }
        if body != "*":
            for field in message.fields:
                if field.name in path_fields or field.name == body:
                    continue
                if (
                    field.type != FieldDescriptor.TYPE_MESSAGE
                    or field.message_type.full_name in WELL_KNOWN
                ):
                    parameter = {
                        "name": field.name,
                        "in": "query",
                        "schema": self.field_schema(field, request=True),
                    }
                    if field_behavior_pb2.REQUIRED in behaviors(field):
                        parameter["required"] = True
                    parameters.append(parameter)
        if parameters:
            operation["parameters"] = parameters
        if method.GetOptions().Extensions[access_pb2.access] != access_pb2.ACCESS_PUBLIC:
            operation["security"] = [{"bearer": []}]
        return operation


def document(descriptor_set: Path) -> dict[str, Any]:
    doc = Document(comments(descriptor_set))
    paths: dict[str, dict[str, Any]] = {}
    for descriptor in PROTO_SERVICES.values():
        for method in descriptor.methods:
            binding = http_binding(method)
            if binding:
                verb, template, body = binding
                # `{event.event_id}` is the path's `{event_id}` (one path, its methods).
                path = re.sub(r"\{[a-z_]+\.([a-z_]+)\}", r"{\1}", template)
                paths.setdefault(path, {})[verb.lower()] = doc.operation(
                    method, template, body, verb
                )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Ticketing mesh",
            "version": "v1",
            "description": "The HTTP/JSON surface of the ticketing services, served by "
            "Envoy's gRPC-JSON transcoder. Generated from protos/.",
        },
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(doc.schemas.items())),
            "responses": {
                str(status): {
                    "description": description,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/google.rpc.Status"}
                        }
                    },
                }
                for status, description in ERROR_RESPONSES.items()
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


if __name__ == "__main__":
    json.dump(document(Path(sys.argv[1])), sys.stdout, indent=2)
    sys.stdout.write("\n")
