#!/usr/bin/env bash
# Packs the EmojiCL benchmark's inputs for a GPU machine (no network, at most 64 MiB of files per
# run) as two folders, one per run, each laid out like $CTP_ASSETS:
#   out/gpu-emojicl-1/assets: Noto (train) images, the catalog JSON, EfficientNet-Lite0 in fp16;
#   out/gpu-emojicl-2/assets: Twemoji (eval) images, the MiniLM tokenizer and MiniLM in fp16.
# fp16 copies (scripts/safetensors-fp16.py) are the pretrained weights rounded to 11 mantissa
# bits; ctp loads them into fp32 parameters. The binaries come from scripts/gpu-pack.sh.
#
#   bash bench/gpu-pack-emojicl.sh            then, on the GPU machine (second run, out/gpu-kit and
#   out/gpu-emojicl-1 still there):  bash bench/gpu-emojicl.sh out/gpu-kit out/gpu-emojicl-1 out/gpu-emojicl-2 OUT
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../scripts/env.sh"
"$here/../scripts/setup-data.sh" >/dev/null
cd "$here/.."
nm="$CTP_ASSETS/npm/node_modules"
one=out/gpu-emojicl-1/assets two=out/gpu-emojicl-2/assets
rm -rf out/gpu-emojicl-1 out/gpu-emojicl-2
mkdir -p "$one/weights" "$one/npm/node_modules/emojibase-data/en" "$one/npm/node_modules/emojilib/dist" \
  "$one/npm/node_modules/emoji-datasource-google/img/google" \
  "$two/weights/minilm" "$two/npm/node_modules/emoji-datasource-twitter/img/twitter"
cp "$nm/emoji-datasource-google/emoji.json" "$one/npm/node_modules/emoji-datasource-google/"
cp -r "$nm/emoji-datasource-google/img/google/64" "$one/npm/node_modules/emoji-datasource-google/img/google/"
cp "$nm/emojibase-data/en/data.json" "$one/npm/node_modules/emojibase-data/en/"
cp "$nm/emojilib/dist/emoji-en-US.json" "$one/npm/node_modules/emojilib/dist/"
cp -r "$nm/emoji-datasource-twitter/img/twitter/64" "$two/npm/node_modules/emoji-datasource-twitter/img/twitter/"
"$CTP_PYTHON" scripts/safetensors-fp16.py "$CTP_ASSETS/weights/efficientnet-lite0.safetensors" \
  "$one/weights/efficientnet-lite0.safetensors"
"$CTP_PYTHON" scripts/safetensors-fp16.py "$CTP_ASSETS/weights/minilm/model.safetensors" \
  "$two/weights/minilm/model.safetensors"
cp "$CTP_ASSETS/weights/minilm/tokenizer.json" "$two/weights/minilm/"
cp bench/gpu-emojicl.sh out/gpu-emojicl-2/
for d in out/gpu-emojicl-1 out/gpu-emojicl-2; do
  size=$(du -sm "$d" | cut -f1)
  echo "$d: $size MiB" >&2
  if [ "$size" -gt 63 ]; then echo "gpu-pack-emojicl: $d is over 63 MiB" >&2; exit 1; fi
done
