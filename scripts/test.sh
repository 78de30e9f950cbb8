#!/usr/bin/env bash
# The test command: installs what the tests need (torch 2.11.0, the registry data and weights;
# protoc comes from the protoc-bin-vendored crate), then runs every test.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
"$here/setup-data.sh" >/dev/null   # also runs setup-torch.sh
"$here/setup-moto.sh"                # the S3 test server (moto) for ctp-storage
"$here/setup-export.sh"              # ONNX, onnxscript, ONNX Runtime for the exporter (daemon::export)
"$here/setup-k8s-validate.sh"        # Kubernetes schema validation of deploy/k8s (checks::k8s)
cd "$here/.."
# The dashboard's browser tests drive headless Chromium through chromedriver; they skip (and
# say so) where neither can be found, so install them where we can.
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  $sudo apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
    echo "note: could not install chromium + chromium-driver; the dashboard browser tests will skip" >&2
fi
cargo test -- "$@"
