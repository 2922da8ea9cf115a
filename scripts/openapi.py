"""Generates the OpenAPI 3 document of the HTTP/JSON surface from the protos.

Paths come from the `google.api.http` annotations, schemas from the messages
(in the proto3 JSON mapping Envoy's transcoder uses: proto field names, int64
as strings, enums by name), required/read-only from `google.api.field_behavior`,
security from `ticketing.common.v1.access`, descriptions from the proto
comments. `make protos` writes gen/openapi.json; Envoy serves it at
/openapi.json.

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

from runtime.contracts import PROTO_SERVICES, http_binding
from ticketing.common.v1 import access_pb2

SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    # 64-bit integers are JSON strings in the proto3 JSON mapping.
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string"},
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


class Document:
    def __init__(self, descriptions: dict[str, str]) -> None:
        self.descriptions = descriptions
        self.schemas: dict[str, Any] = {"google.rpc.Status": ERROR_SCHEMA}

    def ref(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[message.full_name])
        if message.full_name not in self.schemas:
            self.schemas[message.full_name] = {}  # placeholder against recursion
            self.schemas[message.full_name] = self.object_schema(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def object_schema(self, message: Descriptor, skip: set[str] | None = None) -> dict[str, Any]:
        properties, required = {}, []
        for field in message.fields:
            if skip and field.name in skip:
                continue
            schema = self.field_schema(field)
            behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                schema["readOnly"] = True
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(field.name)
            description = self.descriptions.get(field.full_name)
            if description:
                schema["description"] = description
            properties[field.name] = schema
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if self.descriptions.get(message.full_name):
            schema["description"] = self.descriptions[message.full_name]
        return schema

    def field_schema(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            item = self.ref(field.message_type)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            item = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        else:
            item = dict(SCALARS[field.type])
        if field.is_repeated:
            return {"type": "array", "items": item}
        return item

    def operation(self, method: MethodDescriptor, template: str, body: str) -> dict[str, Any]:
        request = method.input_type
        path_fields = set(re.findall(r"\{([^}=]+)", template))
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": self.field_schema(request.fields_by_name[name]),
            }
            for name in sorted(path_fields)
        ]
        operation: dict[str, Any] = {
            "operationId": f"{method.containing_service.name}_{method.name}",
            "tags": [method.containing_service.name],
            "summary": self.descriptions.get(method.full_name, method.name),
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": self.ref(method.output_type)}},
                },
                "default": {
                    "description": "An error",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/google.rpc.Status"}
                        }
                    },
                },
            },
        }
        if body == "*":
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": self.object_schema(request, skip=path_fields)}
                },
            }
        elif body:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": self.field_schema(request.fields_by_name[body])}
                },
            }
        else:
            for field in request.fields:
                if field.name not in path_fields and field.type != FieldDescriptor.TYPE_MESSAGE:
                    parameters.append(
                        {"name": field.name, "in": "query", "schema": self.field_schema(field)}
                    )
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
                paths.setdefault(template, {})[verb.lower()] = doc.operation(method, template, body)
    return {
        "openapi": "3.0.3",
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
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


if __name__ == "__main__":
    json.dump(document(Path(sys.argv[1])), sys.stdout, indent=2)
    sys.stdout.write("\n")
