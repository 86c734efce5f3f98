#!/usr/bin/env bash
# Regenerate petrel/v1 from protos/petrel/v1/*.proto (python, grpc and mypy stubs).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
# the mypy-protobuf plugins live next to the interpreter
export PATH="$(dirname "$(command -v "$py")"):$PATH"
rm -f petrel/v1/*_pb2*.py petrel/v1/*_pb2*.pyi
"$py" -m grpc_tools.protoc -I protos \
  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
  protos/petrel/v1/*.proto
