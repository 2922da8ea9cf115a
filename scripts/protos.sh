#!/usr/bin/env bash
# Generates everything derived from protos/: the Python stubs, the descriptor
# set Envoy's transcoder loads (with error_details.proto, so error details
# print as JSON), and the OpenAPI document. Used by `make protos` and the
# Dockerfile.   usage: scripts/protos.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python}
mapfile -t PROTOS < <(find protos/ticketing -name '*.proto' | sort)
rm -rf gen/ticketing gen/descriptors.binpb gen/openapi.json
mkdir -p gen/ticketing
"$PY" -m grpc_tools.protoc -Iprotos --python_out=gen --pyi_out=gen --grpc_python_out=gen "${PROTOS[@]}"
"$PY" -m grpc_tools.protoc -Iprotos --include_imports --include_source_info \
  --descriptor_set_out=gen/descriptors.binpb "${PROTOS[@]}" google/rpc/error_details.proto
"$PY" scripts/openapi.py gen/descriptors.binpb > gen/openapi.json
