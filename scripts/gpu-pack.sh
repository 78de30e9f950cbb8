#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has torch but no network and no
# Rust: stripped release binaries, the MiniLM tokenizer and two small EmojiCL tasks (WebDataset
# shards), in one folder (default out/gpu-kit/, git-ignored, a few tens of MiB).
#
#   bash scripts/gpu-pack.sh [KIT_DIR]
#
# Then, on the GPU machine, from the repository root:  bash scripts/gpu-check.sh [KIT_DIR],
# bash bench/gpu-step.sh [KIT_DIR] --out DIR (#27 §1-2), bash bench/gpu-daemon.sh KIT DIR PART.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
"$here/setup-data.sh" >/dev/null
cd "$here/.."
kit="${1:-out/gpu-kit}"
echo "== building release binaries" >&2
cargo build --release --bins -q
rm -rf "$kit"
mkdir -p "$kit/bin" "$kit/weights/minilm"
for b in ctpd ctpctl ctp-bench; do
  cp "$CARGO_TARGET_DIR/release/$b" "$kit/bin/$b"
  strip "$kit/bin/$b"
done
cp "$CTP_ASSETS/weights/minilm/tokenizer.json" "$kit/weights/minilm/"
echo "== exporting two small EmojiCL tasks" >&2
"$kit/bin/ctpctl" emojicl export --out "$kit/emojicl" --format webdataset --tasks 0,1 \
  --max-train "${CTP_KIT_MAX_TRAIN:-256}" --max-eval "${CTP_KIT_MAX_EVAL:-64}" >&2
# The GPU scripts (also runnable from the repository root) and the PyTorch peer they time.
cp scripts/gpu-check.sh bench/gpu-step.sh bench/gpu-daemon.sh bench/gpu-emojicl.sh bench/pytorch_step.py "$kit/"
# xz leaves room in the 64 MiB for the EmojiCL inputs (scripts/gpu-pack-emojicl.sh);
# gpu-check.sh unpacks it.
tar -cJf "$kit/bin.tar.xz" -C "$kit" bin
rm -r "$kit/bin"
du -sh "$kit" >&2
size=$(du -sm "$kit" | cut -f1)
if [ "$size" -gt 60 ]; then
  echo "gpu-pack: $kit is $size MiB; a GPU run carries at most 64 MiB" >&2
  exit 1
fi
echo "$kit"
