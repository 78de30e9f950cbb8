#!/usr/bin/env bash
# Installs torch==2.11.0 (libtorch for tch 0.24) into a venv under $CTP_CACHE, with the Python
# packages the tests use (grpcio, grpcio-tools, and hatchling, the build backend of
# clients/python). Idempotent.
set -euo pipefail
. "$(dirname "$0")/env.sh"
want=2.11.0
# The python_client test installs clients/python offline (`pip install --no-index
# --no-build-isolation`), so pip builds it with the hatchling of this venv.
hatchling=1.33.0
if ! { [ -x "$CTP_PYTHON" ] && "$CTP_PYTHON" -c "import torch,sys; import safetensors, tokenizers, grpc, grpc_tools; sys.exit(0 if torch.__version__.split('+')[0]=='$want' else 1)" 2>/dev/null; }; then
  echo "ctp: installing torch==$want into $CTP_VENV (about 1 minute, 4.6 GB) ..." >&2
  mkdir -p "$CTP_CACHE"
  python3 -m venv "$CTP_VENV"
  if ! "$CTP_VENV/bin/pip" install -q --disable-pip-version-check "torch==$want" numpy safetensors tokenizers grpcio grpcio-tools; then
    echo "ctp: error: could not install torch==$want from PyPI (is https://pypi.org reachable?)" >&2
    exit 1
  fi
fi
if ! "$CTP_PYTHON" -c "import sys, importlib.metadata as m; sys.exit(m.version('hatchling') != '$hatchling')" 2>/dev/null; then
  if ! "$CTP_VENV/bin/pip" install -q --disable-pip-version-check "hatchling==$hatchling"; then
    echo "ctp: error: could not install hatchling==$hatchling from PyPI (is https://pypi.org reachable?)" >&2
    exit 1
  fi
fi
