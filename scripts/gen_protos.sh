#!/usr/bin/env bash
# Regenerates the Python stubs (+ .pyi) of every proto. The only generator.
# Descriptor names are paths under the two proto roots: protos/ (the public contracts, the
# v2 one included) and internal/protos/ (the servers' own, package maas.queue.v1, whose stubs
# live in runtime/queue/v1 so that the SDK `maas` ships none of them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PATH="$(dirname "$(command -v "$PY")"):$PATH"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
$PY -m grpc_tools.protoc \
  --proto_path=protos --proto_path=internal/protos \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  maas/inference/grpc_service.proto \
  maas/v1/model_service.proto \
  maas/v1/training_service.proto \
  maas/v1/dataset_service.proto \
  maas/v1/key_service.proto \
  maas/v1/inference_service.proto \
  maas/v1/queue_service.proto \
  maas/v1/errors.proto \
  maas/v1/generation_service.proto \
  maas/queue/v1/queue.proto \
  maas/queue/v1/runner.proto
# copy GENERATED_DIR PACKAGE_DIR: replaces the stubs of one package.
copy() {
  mkdir -p "$2"
  rm -f "$2"/*_pb2.py "$2"/*_pb2.pyi "$2"/*_pb2_grpc.py "$2"/*_pb2_grpc.pyi
  cp "$out/$1"/* "$2"/
  [ -f "$2/__init__.py" ] || : > "$2/__init__.py"
}
copy maas/inference maas/inference
copy maas/v1 maas/v1
copy maas/queue/v1 runtime/queue/v1
# The internal stubs import each other by their Python path, not by their proto package.
sed -i 's/\bmaas\.queue\.v1\( import \|\.[a-z_]*_pb2\b\)/runtime.queue.v1\1/g' runtime/queue/v1/*.py runtime/queue/v1/*.pyi
# ... and the path grpc names in its version-mismatch message.
sed -i 's#generated code in maas/queue/v1/#generated code in runtime/queue/v1/#' runtime/queue/v1/*_grpc.py
# The v2 contract's package `inference` is also defined by tritonclient (with more messages);
# two different files defining the same symbols cannot share protobuf's default pool, so
# ours lives in a private pool and `import maas` works next to `import tritonclient.grpc`.
sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile(/' \
  maas/inference/grpc_service_pb2.py
grep -q '^POOL = ' maas/inference/grpc_service_pb2.py
