#!/usr/bin/env bash
# Installs what maas needs, idempotently: redis-server, chromium and chromium-driver (the
# console's browser tests) with apt-get when root, a virtual
# environment in .venv with torch 2.13.0 first (the CPU wheel on this kind of machine), then
# the project with its server, worker and dev extras. Re-runs are quick: a stamp records what
# was installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing redis-server with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "bootstrap: redis-server is missing; install it: sudo apt-get install -y redis-server" >&2
    exit 1
  fi
fi

# The console's browser tests (tests/e2e/test_console_browser.py) drive Debian's chromium
# through its chromium-driver with Selenium; nothing is downloaded when they run.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing chromium and chromium-driver with apt-get"
    # apt-get update only when the package lists are too old to install them.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
      { apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
  else
    echo "bootstrap: chromium or chromedriver is missing; tests/e2e/test_console_browser.py will fail until: sudo apt-get install -y chromium chromium-driver" >&2
  fi
fi

if ! command -v kubectl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq kubernetes-client >/dev/null 2>&1 || apt-get install -y -qq kubectl >/dev/null 2>&1 || true
  fi
  command -v kubectl >/dev/null 2>&1 || echo "bootstrap: kubectl is missing; tests/deploy will fail until it is installed (it renders deploy/k8s offline)" >&2
fi

# promtool checks and unit-tests the PrometheusRules (tests/deploy/test_promtool.py). Debian's
# prometheus package holds it; only the binary is taken (no daemon installed), as any user.
if ! command -v promtool >/dev/null 2>&1 && [ ! -x .tools/bin/promtool ] &&
   command -v apt-get >/dev/null 2>&1; then
  scratch=$(mktemp -d)
  if (cd "$scratch" && apt-get download -qq prometheus >/dev/null 2>&1 &&
      dpkg-deb -x prometheus_*.deb root); then
    mkdir -p .tools/bin && cp "$scratch/root/usr/bin/promtool" .tools/bin/promtool
  else
    echo "bootstrap: promtool is missing (apt-get download prometheus failed); tests/deploy/test_promtool.py will fail until it is on PATH" >&2
  fi
  rm -rf "$scratch"
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
  done
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv

stamp=.venv/.maas-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: any other version is a multi-GB download here.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[server,worker,dev]"
  echo "$want" > "$stamp"
fi

# The Node.js examples (examples/node; tests/e2e/test_node_examples.py runs them), from the
# committed lockfile, when npm is here and the lockfile is newer than what was installed.
if command -v npm >/dev/null 2>&1 &&
   [ ! examples/node/node_modules/.package-lock.json -nt examples/node/package-lock.json ]; then
  npm ci --prefix examples/node --no-audit --no-fund --loglevel=error
fi
