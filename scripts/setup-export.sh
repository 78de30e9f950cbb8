#!/usr/bin/env bash
# Installs what the Python client's exporter needs besides torch (`ctp-client[export]`,
# docs/export.md) into $CTP_VENV: ONNX, onnxscript (torch.onnx's exporter) and ONNX Runtime,
# pinned. The export daemon test (tests/daemon/export.rs) converts versions with them.
# Idempotent; offline once installed. Runs scripts/setup-torch.sh first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
"$here/setup-torch.sh"
onnx=1.23.2
onnxscript=0.7.2
onnxruntime=1.32.0
if ! "$CTP_PYTHON" -c "import sys, importlib.metadata as m; sys.exit(0 if (m.version('onnx'), m.version('onnxscript'), m.version('onnxruntime')) == ('$onnx', '$onnxscript', '$onnxruntime') else 1)" 2>/dev/null; then
  echo "ctp: installing onnx==$onnx onnxscript==$onnxscript onnxruntime==$onnxruntime into $CTP_VENV ..." >&2
  if ! "$CTP_VENV/bin/pip" install -q --disable-pip-version-check \
      "onnx==$onnx" "onnxscript==$onnxscript" "onnxruntime==$onnxruntime"; then
    echo "ctp: error: could not install the ONNX packages from PyPI (is https://pypi.org reachable?)" >&2
    exit 1
  fi
fi
