#!/usr/bin/env bash
# Regenerates the Python stubs (+ .pyi) of every proto. The only generator.
# protos/inference is mapped to the import path maas.inference; protos/maas/... is its own path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PATH="$(dirname "$(command -v "$PY")"):$PATH"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
$PY -m grpc_tools.protoc \
  --proto_path=maas/inference=protos/inference \
  --proto_path=maas=protos/maas \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  maas/inference/grpc_service.proto \
  maas/v1/model_service.proto \
  maas/v1/training_service.proto \
  maas/v1/dataset_service.proto \
  maas/v1/key_service.proto \
  maas/v1/inference_service.proto \
  maas/v1/queue_service.proto \
  maas/queue/v1/queue.proto \
  maas/queue/v1/runner.proto
for d in maas/inference maas/v1 maas/queue/v1; do
  mkdir -p "$d"
  rm -f "$d"/*_pb2.py "$d"/*_pb2.pyi "$d"/*_pb2_grpc.py "$d"/*_pb2_grpc.pyi
  cp "$out/$d"/* "$d"/
  [ -f "$d/__init__.py" ] || : > "$d/__init__.py"
done
[ -f maas/queue/__init__.py ] || : > maas/queue/__init__.py
# The v2 contract's package `inference` is also defined by tritonclient (with more messages);
# two different files defining the same symbols cannot share protobuf's default pool, so
# ours lives in a private pool and `import maas` works next to `import tritonclient.grpc`.
sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile(/' \
  maas/inference/grpc_service_pb2.py
grep -q '^POOL = ' maas/inference/grpc_service_pb2.py
