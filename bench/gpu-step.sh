#!/usr/bin/env bash
# Issue #27 §1–2 on a GPU machine, in one run of at most ~8 minutes on an H200 (machine start
# excluded): ctp's step against its PyTorch peers (eager, eager + TF32 for fp32, torch.compile
# default mode), each row the median (min, max) of 3 repetitions × 30 measured steps, ctp's
# drift-gated row paired with its every-step row in one process; then profiled rows (the drift
# check + sync share of a step). Needs python3 with torch and the kit of scripts/gpu-pack.sh.
#
#   bash bench/gpu-step.sh [KIT_DIR] [--out DIR] [--device cpu] [--budget SECONDS]
#
# Writes DIR/step-cuda.md and DIR/step-cuda.json (DIR defaults to bench/results; on the device
# machine pass --out "$OUT"). Items run in priority order and one whose estimate no longer fits
# the budget (default 450 s) is skipped and listed as such:
#   1. compare `base` bf16, batch 256     (target: >= 1.15x eager autocast, >= 1.0x compiled)
#   2. compare `small` fp32, batch 256    (small's best precision on the H200: fp32 + TF32)
#   3. profiled step rows: `small` fp32 and `base` bf16 (drift + sync share; target <= 1 %)
#   4. compare `small` bf16, batch 256
# max-autotune, the daemon end to end and EmojiCL are bench/gpu-daemon.sh's.
#
# `--device cpu` is the dry mode that tests this script without a GPU: `small` only, batch 4,
# 2 measured steps, 1 repetition, no compiled peer (CTP_STEP_COMPILE=1 adds it), and writes
# DIR/step-cpu-dry.{md,json}. CTP_STEP_BATCH, CTP_STEP_STEPS, CTP_STEP_REPS override the shape.
set -euo pipefail
kit=out/gpu-kit
device=cuda
out=bench/results
budget=450
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    -*) echo "gpu-step: unknown flag $1" >&2; exit 2 ;;
    *) kit="$1"; shift ;;
  esac
done
kit="$(cd "$kit" && pwd)"
py="${CTP_PYTHON:-python3}"
if [ ! -d "$kit/bin" ] && [ -f "$kit/bin.tar.xz" ]; then
  "$py" -c 'import sys,tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$kit/bin.tar.xz" "$kit"
fi
if [ "$device" = cpu ]; then
  tag=cpu-dry; batch="${CTP_STEP_BATCH:-4}"; steps="${CTP_STEP_STEPS:-2}"; reps="${CTP_STEP_REPS:-1}"
  threads="${CTP_STEP_THREADS:-2}"; compile_flag=--no-compile; [ -n "${CTP_STEP_COMPILE:-}" ] && compile_flag=""
  items="compare:small:fp32 profile:small:fp32"
  # What each item costs here, seconds (a guess for the dry mode; it only orders the skips).
  est() { echo 60; }
else
  tag=cuda; batch="${CTP_STEP_BATCH:-256}"; steps="${CTP_STEP_STEPS:-30}"; reps="${CTP_STEP_REPS:-3}"
  threads=0; compile_flag=""
  items="compare:base:bf16 compare:small:fp32 profile:small:fp32 profile:base:bf16 compare:small:bf16"
  # Estimated seconds on an H200 from the last round's step times (1,163 samples/s base bf16,
  # 4,636 small fp32 + TF32, 2,687 small bf16 at batch 256) plus ~10 s per process start and
  # ~90 s per torch.compile; an estimate only decides whether an item still fits.
  est() {
    case "$1" in
      compare:base:bf16) echo 200 ;; compare:small:fp32) echo 150 ;; compare:small:bf16) echo 130 ;;
      profile:*) echo 30 ;; *) echo 120 ;;
    esac
  }
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unset LD_PRELOAD
torch_lib="$("$py" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CTP_ASSETS="$kit" CTP_PYTHON="$py" CTP_PYTORCH_STEP="$kit/pytorch_step.py" NO_COLOR=1
bin="$kit/bin"
started=$(date +%s)
left() { echo $(( budget - ($(date +%s) - started) )); }
log() { echo "== [$(( $(date +%s) - started ))s] $*" >&2; }
md="$work/report.md"
{
  echo "# ctp against its PyTorch peers ($tag)"
  echo
  echo "Written by \`bench/gpu-step.sh$( [ "$device" = cpu ] && echo ' --device cpu')\` on $(date -u +%Y-%m-%d) (issue #27 §1–2), kit from \`scripts/gpu-pack.sh\`; random weights, real shapes."
  echo
  echo '```'
  (nvidia-smi -L 2>/dev/null || echo "no nvidia-smi") | head -4
  "$py" -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  echo '```'
  echo
} >"$md"
skipped=()
n=0
for item in $items; do
  IFS=: read -r kind preset precision <<<"$item"
  need=$(est "$item")
  if [ "$(left)" -lt "$need" ]; then
    log "skip $item (needs ~${need}s, $(left)s left)"; skipped+=("$item"); continue
  fi
  n=$((n + 1))
  case "$kind" in
    compare)
      log "compare $preset $precision, batch $batch, $reps x $steps steps"
      # Each PyTorch peer may take at most the item's estimate plus a minute (a stuck compile).
      # shellcheck disable=SC2086
      "$bin/ctp-bench" compare --device "$device" --presets "$preset" --precisions "$precision" \
        --batch "$batch" --steps "$steps" --reps "$reps" --threads "$threads" --random-weights \
        --python "$py" --peer-timeout $(( need + 60 )) $compile_flag \
        --json "$work/item-$n-compare.json" >"$work/item-$n.md" \
        || { log "compare $item failed"; echo "compare $item FAILED (see the log)" >"$work/item-$n.md"; }
      { echo "## \`$preset\` $precision: ctp vs PyTorch"; echo; tail -n +3 "$work/item-$n.md"; echo; } >>"$md"
      ;;
    profile)
      log "profiled step $preset $precision, batch $batch"
      "$bin/ctp-bench" step --presets "$preset" --batches "$batch" --precisions "$precision" \
        --steps "$(( steps < 20 ? steps : 20 ))" --device "$device" --threads "$threads" --random-weights \
        --profile --json "$work/item-$n-profile.json" >"$work/item-$n.md"
      { echo "## Profiled step, \`$preset\` $precision (a device sync after each part; drift + sync share)"; echo;
        tail -n +3 "$work/item-$n.md"; echo; } >>"$md"
      ;;
  esac
done
if [ ${#skipped[@]} -gt 0 ]; then
  echo "Skipped for the ${budget}s budget (run them with a larger \`--budget\` or in bench/gpu-daemon.sh): ${skipped[*]}." >>"$md"
  echo >>"$md"
fi
"$py" - "$work" "$out/step-$tag.json" "${skipped[@]}" <<'EOF'
import glob, json, sys
w = sys.argv[1]
doc = {"items": [], "skipped": sys.argv[3:]}
for p in sorted(glob.glob(f"{w}/item-*-*.json"), key=lambda p: int(p.split("item-")[1].split("-")[0])):
    doc["items"].append({"kind": p.rsplit("-", 1)[1][:-5], "result": json.load(open(p))})
json.dump(doc, open(sys.argv[2], "w"), indent=1)
EOF
echo "Total wall time: $(( $(date +%s) - started )) s (budget ${budget} s)." >>"$md"
cp "$md" "$out/step-$tag.md"
cat "$out/step-$tag.md"
log "wrote $out/step-$tag.md and $out/step-$tag.json"
