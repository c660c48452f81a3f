#!/usr/bin/env bash
# One prepared check for a GPU host with many cores (16 cores, one H200), within 8 minutes:
#   1. bench.scaling at cores 1,2,4,8 on CPU (cnn, 3 s per point): req/s against K x one core;
#   2. cnn in-process on the device at batch 1/32/64 (the compute ceiling);
#   3. bench.scaling with the workers on the device, MAAS_MAX_BATCH_SIZE 32 then 64, at the
#      largest K asked for (K = 1 is measured too, as always).
# Everything lands in $OUT (default bench/results/device-check-<stamp>): device_check.log and
# the bench JSON files.
#
#   bench/device_check.sh prepare      # here, once: wheels + a redis-server for a bare host
#   bench/device_check.sh              # there: --cores 1,2,4,8 --device cuda
#   bench/device_check.sh --cores 1 --device cpu   # a dry run on a 2-core CPU machine
#
# A bare GPU host lacks redis-server and some of maas's Python packages (redis, grpcio at
# the version the stubs were made with, grpcio-health-checking, grpcio-reflection, captum);
# `prepare` puts them, for CPython 3.12 x86-64, in .whl/device_check (git-ignored): carry
# that path. On that host the script installs them into /tmp/site and puts the repository
# and them first on PYTHONPATH; redis-server runs with its own libraries only.
set -u -o pipefail
cd "$(dirname "$0")/.."
KIT=.whl/device_check
CORES=1,2,4,8
DEVICE=cuda
PY=${PY:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

prepare() {
  rm -rf "$KIT" && mkdir -p "$KIT/bin" "$KIT/lib" || exit 1
  # The versions this checkout is tested with, wheels for the GPU host's CPython 3.12.
  mapfile -t pins < <("$PY" - <<'EOF'
from importlib.metadata import version
for name in ("redis", "grpcio", "grpcio-status", "grpcio-health-checking",
             "grpcio-reflection", "protobuf", "googleapis-common-protos", "captum"):
    print(f"{name}=={version(name)}")
EOF
)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$KIT" "${pins[@]}" \
    || exit 1
  local server
  server=$(command -v redis-server) || { echo "prepare: no redis-server here"; exit 1; }
  cp -L "$server" "$KIT/bin/redis-server.real"
  # Its shared libraries but the C library's own (the host's glibc is the same or newer).
  ldd "$server" | awk '/=> \// {print $3}' \
    | grep -v -E '/(libc|libm|libdl|libpthread|librt)\.so' | xargs -r cp -L -t "$KIT/lib"
  cat > "$KIT/bin/redis-server" <<'EOF'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/../lib" exec "$here/redis-server.real" "$@"
EOF
  chmod +x "$KIT/bin/redis-server"
  du -sh "$KIT" && ls "$KIT"
}

if [ "${1:-}" = prepare ]; then prepare; exit; fi
while [ $# -gt 0 ]; do
  case "$1" in
    --cores) CORES=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    *) echo "usage: $0 [prepare | --cores 1,2,4,8 --device cuda]"; exit 2 ;;
  esac
done
LARGEST=$(tr ',' '\n' <<< "$CORES" | sort -n | tail -1)
OUT=${OUT:-bench/results/device-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device_check.log") 2>&1

if [ -d "$KIT" ] && [ "$PY" != .venv/bin/python ]; then  # a bare host's python3
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$KIT"/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
if ! command -v redis-server > /dev/null && [ -x "$KIT/bin/redis-server" ]; then
  export PATH="$PWD/$KIT/bin:$PATH"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

SUMMARY=()
step() {  # step NAME SECONDS COMMAND...: at most SECONDS (SIGINT: the bench stops its cluster)
  local name=$1 secs=$2 started=$SECONDS rc
  shift 2
  echo "== $name (at most ${secs}s): ${*//$'\n'/ }" | cut -c1-240
  timeout -s INT -k 20 "$secs" "$@"
  rc=$?
  SUMMARY+=("$name: rc $rc in $((SECONDS - started))s")
  echo "== $name: rc $rc in $((SECONDS - started))s"
}

COMPUTE='
import sys, time, torch
from tests.models import reference_model
device = torch.device(sys.argv[1])
torch.set_num_threads(1)
model = reference_model("cnn").to(device)
for batch in (1, 32, 64):
    x = torch.rand(batch, 1, 28, 28, device=device)
    with torch.inference_mode():
        for _ in range(20):
            model(x).cpu()
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < 1.0:
            model(x).cpu()  # the result back on the host, as a worker needs it
            n += batch
    print(f"cnn on {device} in-process, batch {batch}: "
          f"{n / (time.perf_counter() - started):,.0f} samples/s", flush=True)
'

echo "== host: $(nproc) cores usable, python $("$PY" -V 2>&1), $(date -u +%FT%TZ)"
command -v nvidia-smi > /dev/null && nvidia-smi -L
redis-server --version || { echo "no redis-server: run '$0 prepare' and carry $KIT"; exit 1; }
command -v taskset > /dev/null || { echo "no taskset (util-linux)"; exit 1; }
"$PY" -c "import grpc, redis, torch, gateway.server, worker.loop, scheduler.daemon
print('grpc', grpc.__version__, 'redis', redis.__version__, 'torch', torch.__version__,
      'cuda', torch.cuda.is_available())" || exit 1

step scaling-cpu 200 "$PY" -m bench.scaling --cores "$CORES" --model cnn --duration 3 \
  --device cpu --out "$OUT" --tag cpu
step "compute-$DEVICE" 30 "$PY" -c "$COMPUTE" "$DEVICE"
for batch in 32 64; do
  step "scaling-$DEVICE-b$batch" 100 "$PY" -m bench.scaling --cores "$LARGEST" --model cnn \
    --duration 3 --device "$DEVICE" --out "$OUT" --tag "$DEVICE-b$batch" \
    "MAAS_MAX_BATCH_SIZE=$batch" "MAAS_FAIR_SHARE_SLOTS=$((4 * batch))"
done
echo "== summary"
printf '%s\n' "${SUMMARY[@]}"
ls "$OUT"
