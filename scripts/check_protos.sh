#!/usr/bin/env bash
# Regenerate petrel/v1 into a scratch directory and fail if it differs from the committed code.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
# the mypy-protobuf plugins live next to the interpreter
export PATH="$(dirname "$(command -v "$py")"):$PATH"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$py" -m grpc_tools.protoc -I protos \
  --python_out="$scratch" --grpc_python_out="$scratch" --mypy_out="$scratch" --mypy_grpc_out="$scratch" \
  protos/petrel/v1/*.proto >/dev/null
for f in "$scratch"/petrel/v1/*; do
  name=$(basename "$f")
  if ! cmp -s "$f" "petrel/v1/$name"; then
    echo "generated code is stale: petrel/v1/$name (run: make proto)" >&2
    exit 1
  fi
done
count_gen=$(ls "$scratch"/petrel/v1 | wc -l)
count_repo=$(ls petrel/v1 | grep -c '_pb2' || true)
if [ "$count_gen" != "$count_repo" ]; then
  echo "petrel/v1 has $count_repo generated files, protos produce $count_gen (run: make proto)" >&2
  exit 1
fi
echo "generated code is up to date"
