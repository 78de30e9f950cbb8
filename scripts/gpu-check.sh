#!/usr/bin/env bash
# ctp on a GPU machine, in one run (about 5 minutes on an H200): needs only python3 with torch
# (no network, no Rust) and the kit that scripts/gpu-pack.sh makes (stripped release binaries,
# the tokenizer, two small EmojiCL tasks).
#
#   bash scripts/gpu-check.sh [KIT_DIR] [--device cpu] [--out DIR]
#
# 1. `--device auto` must pick CUDA, without LD_PRELOAD (libtorch_cuda.so NEEDED by the binaries);
# 2. the step table: tiny/small/base × batch 64/256 × fp32/bf16 (random weights, real shapes),
#    plus a profiled row (drift + sync share) and a drift-gated row;
# 3. the PyTorch comparison (bench/pytorch_step.py, eager, same GPU, one repetition) for small
#    fp32/bf16 and base bf16;
# 4. the daemon end to end: ctpd --device auto, two tasks via ctpctl, the version table;
# 5. writes DIR/step-check-cuda.md and DIR/step-check-cuda.json (DIR defaults to bench/results;
#    bench/gpu-step.sh writes step-cuda.{md,json}, issue #27's table).
#
# `--device cpu` runs the same script on a CPU with small shapes (tiny/small, batches 8/16, two
# steps, one epoch of `tiny` end to end) and writes DIR/step-cpu-check.{md,json}: the way to
# test it without a GPU.
# CTP_CHECK_PRESETS / CTP_CHECK_BATCHES / CTP_CHECK_STEPS override the table's shape, and
# CTP_CHECK_BIG the batch of the profiled/gated rows and of the comparison, and
# CTP_CHECK_THREADS the CPU threads of `--device cpu` (default 1: robust on a shared machine).
set -euo pipefail
kit=out/gpu-kit
device=auto
out=bench/results
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -*) echo "gpu-check: unknown flag $1" >&2; exit 2 ;;
    *) kit="$1"; shift ;;
  esac
done
kit="$(cd "$kit" && pwd)"
py="${CTP_PYTHON:-python3}"
if [ ! -d "$kit/bin" ] && [ -f "$kit/bin.tar.xz" ]; then
  "$py" -c 'import sys,tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$kit/bin.tar.xz" "$kit"
fi
if [ "$device" = cpu ]; then
  tag=cpu-check
  presets="${CTP_CHECK_PRESETS:-tiny,small}"
  batches="${CTP_CHECK_BATCHES:-8,16}"
  steps="${CTP_CHECK_STEPS:-2}"
  big="${CTP_CHECK_BIG:-16}"; base_cmp=""; epochs=1; bs=16; threads="${CTP_CHECK_THREADS:-1}"; e2e_preset=tiny
else
  tag=check-cuda
  presets="${CTP_CHECK_PRESETS:-tiny,small,base}"
  batches="${CTP_CHECK_BATCHES:-64,256}"
  steps="${CTP_CHECK_STEPS:-5}"
  big=256; base_cmp=base; epochs=10; bs=64; threads=0; e2e_preset=small
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
daemon=""
cleanup() {
  if [ -n "$daemon" ]; then kill -TERM "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# The binaries' rpath points at the build machine's torch; use this machine's (no LD_PRELOAD).
unset LD_PRELOAD
torch_lib="$("$py" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CTP_ASSETS="$kit" CTP_PYTHON="$py" CTP_PYTORCH_STEP="$kit/pytorch_step.py" NO_COLOR=1
bin="$kit/bin"
md="$work/report.md"
log() { echo "== $*" >&2; }
started=$(date +%s)

{
  echo "# ctp step benchmark ($tag)"
  echo
  echo "Written by \`scripts/gpu-check.sh$( [ "$device" = cpu ] && echo ' --device cpu')\` on $(date -u +%Y-%m-%d), kit from \`scripts/gpu-pack.sh\`."
  echo
  echo '```'
  (nvidia-smi -L 2>/dev/null || echo "no nvidia-smi") | head -4
  "$py" -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  echo '```'
  echo
} >"$md"

log "1. device selection without LD_PRELOAD"
needed="$( (readelf -d "$bin/ctpd" 2>/dev/null || true) | grep -o 'lib[a-z0-9_]*cuda[a-z0-9_]*\.so' | sort -u | tr '\n' ' ')"
pick="$("$bin/ctp-bench" step-one --preset tiny --batch 8 --steps 1 --threshold 0 --device "$device" \
  --threads "$threads" --random-weights)"
picked="$(echo "$pick" | "$py" -c 'import json,sys;r=json.load(sys.stdin);print(r["device"], r["precision"])')"
{
  echo "## Device selection"
  echo
  echo "- \`--device $device\` picked: **$picked** (LD_PRELOAD unset)"
  echo "- CUDA libraries NEEDED by ctpd (readelf -d): ${needed:-none listed (or readelf missing)}"
  echo
} >>"$md"
if [ "$device" != cpu ] && [ "${picked%% *}" = cpu ]; then
  echo "gpu-check: --device auto picked the CPU on this machine" >&2
  cat "$md" >&2
  exit 1
fi

log "2. step table: $presets x $batches x fp32,bf16"
"$bin/ctp-bench" step --presets "$presets" --batches "$batches" --precisions fp32,bf16 \
  --steps "$steps" --device "$device" --threads "$threads" --random-weights \
  --json "$work/step.json" >"$work/step.md"
log "   profiled and drift-gated rows (small, batch $big)"
"$bin/ctp-bench" step --presets small --batches "$big" --precisions fp32,bf16 --steps "$steps" \
  --device "$device" --threads "$threads" --random-weights --profile --json "$work/profiled.json" >"$work/profiled.md"
"$bin/ctp-bench" step --presets small --batches "$big" --precisions auto --steps "$steps" \
  --threshold 0.02 --device "$device" --threads "$threads" --random-weights --json "$work/gated.json" >"$work/gated.md"
{
  echo "## Step throughput (task >= 1 CTP step: online fwd+bwd, momentum fwd, reference fwd; random weights, real shapes)"
  echo
  echo "Threshold 0 (sync every step), unprofiled (no device sync inside a step)."
  echo
  tail -n +3 "$work/step.md"
  echo
  echo "Profiled (a device sync after each part; drift+sync share of the step):"
  echo
  tail -n +3 "$work/profiled.md"
  echo
  echo "Drift-gated (threshold 0.02), unprofiled:"
  echo
  tail -n +3 "$work/gated.md"
  echo
} >>"$md"

log "3. PyTorch comparison"
cmp_dev="$device"; [ "$cmp_dev" = auto ] && cmp_dev=cuda
echo "## ctp vs eager PyTorch (same device, same run)" >>"$md"
n=0
for spec in "small fp32" "small bf16" ${base_cmp:+"base bf16"}; do
  set -- $spec
  n=$((n + 1))
  # One repetition, eager only: the full comparison (3 x 30 steps, compiled peers) is
  # bench/gpu-step.sh's.
  "$bin/ctp-bench" compare --device "$cmp_dev" --preset "$1" --precision "$2" --batch "$big" \
    --steps "$steps" --reps 1 --no-compile --threads "$threads" --random-weights --python "$py" \
    --json "$work/compare-$n.json" | tail -n +3 >>"$md"
  echo >>"$md"
done

log "4. daemon end to end (two tasks)"
port=$((20000 + RANDOM % 20000)); mport=$((port + 1))
export CTP_ADDR="http://127.0.0.1:$port"
CTP__ENGINE__RANDOM_WEIGHTS=true "$bin/ctpd" --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --device "$device" --metrics-listen "127.0.0.1:$mport" >"$work/ctpd.log" 2>&1 &
daemon=$!
for _ in $(seq 1 150); do "$bin/ctpctl" health >/dev/null 2>&1 && break; sleep 0.2; done
"$bin/ctpctl" health >&2
e2e_start=$(date +%s)
for dir in "$kit"/emojicl/*/; do
  "$bin/ctpctl" submit --model gpucheck --preset "$e2e_preset" --name "$(basename "$dir")" --epochs "$epochs" \
    --batch-size "$bs" --wait "$dir" >&2
done
e2e_s=$(( $(date +%s) - e2e_start ))
"$bin/ctpctl" --json tasks >"$work/tasks.json"
"$py" - "$work/tasks.json" "$mport" >"$work/e2e.md" <<'EOF'
import json, sys, urllib.request
tasks = json.load(open(sys.argv[1]))
tasks = tasks if isinstance(tasks, list) else tasks.get("tasks", [])
print("| task | state | steps | samples/s (daemon) |\n|---|---|---|---|")
for t in tasks:
    p = t.get("progress") or {}
    print(f"| {t.get('name')} | {t.get('state')} | {p.get('step')} | {p.get('samples_per_second', 0):.1f} |")
m = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[2]}/metrics", timeout=5).read().decode()
print("\n/metrics: `" + next((l for l in m.splitlines() if l.startswith("ctp_engine_info")), "ctp_engine_info missing") + "`")
EOF
{
  echo "## Daemon end to end (ctpd --device $device, two EmojiCL tasks, preset $e2e_preset, random init, batch $bs, $epochs epochs; ${e2e_s}s)"
  echo
  echo "Startup log: \`$(grep -m1 'ctpd starting' "$work/ctpd.log" | sed 's/^.*ctpd starting/ctpd starting/')\`"
  echo
  cat "$work/e2e.md"
  echo
  echo '```'
  "$bin/ctpctl" versions --model gpucheck
  echo '```'
} >>"$md"

"$py" - "$work" "$out/step-$tag.json" <<'EOF'
import glob, json, os, sys
w = sys.argv[1]
load = lambda p: json.load(open(p))
doc = {"step": load(f"{w}/step.json"), "profiled": load(f"{w}/profiled.json"), "gated": load(f"{w}/gated.json"),
       "compare": [load(p) for p in sorted(glob.glob(f"{w}/compare-*.json"))],
       "tasks": load(f"{w}/tasks.json")}
json.dump(doc, open(sys.argv[2], "w"), indent=1)
EOF
echo >>"$md"
echo "Total wall time of the check: $(( $(date +%s) - started )) s." >>"$md"
cp "$md" "$out/step-$tag.md"
cat "$out/step-$tag.md"
log "wrote $out/step-$tag.md and $out/step-$tag.json"
