#!/usr/bin/env bash
# Installs kubernetes-validate (from PyPI, pinned) into $CTP_VENV: checks::k8s validates every
# manifest under deploy/k8s strictly against the Kubernetes schemas with it. The package bundles
# the schemas of every Kubernetes version it knows, so once installed it runs offline.
# Idempotent: does nothing when the pinned version is installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
want=1.37.0
if [ ! -x "$CTP_PYTHON" ]; then
  # setup-torch.sh creates the venv with torch; the check needs only a bare one.
  mkdir -p "$CTP_CACHE"
  python3 -m venv "$CTP_VENV"
fi
if [ -x "$CTP_VENV/bin/kubernetes-validate" ] &&
  "$CTP_PYTHON" -c "import sys, importlib.metadata as m; sys.exit(m.version('kubernetes-validate') != '$want')" 2>/dev/null; then
  exit 0
fi
echo "ctp: installing kubernetes-validate==$want into $CTP_VENV ..." >&2
if ! "$CTP_VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$want"; then
  echo "ctp: error: could not install kubernetes-validate==$want from PyPI (is https://pypi.org reachable?)" >&2
  exit 1
fi
"$CTP_VENV/bin/kubernetes-validate" --version >&2
