#!/usr/bin/env bash
# The EmojiCL table (issue #10) on a GPU machine: runs (method, seed) cells of `ctp-bench emojicl`
# as parallel processes sharing the GPU, in priority order, for at most BUDGET seconds, then
# rebuilds the summary. Finished cells are files under OUT/emojicl/cells (a cell cut off by the
# budget leaves nothing), so a later run skips them.
#
#   bash bench/gpu-emojicl.sh KIT PART1 PART2 OUT [JOBS] [BUDGET_S] [PRECISION]
#
# KIT: from scripts/gpu-pack.sh (bin/ctp-bench); PART1/PART2: from bench/gpu-pack-emojicl.sh.
# CELLS overrides the cell list ("method:seed[:row] ..."; methods as `ctp-bench emojicl --methods`,
# row = `--row-index`, one row of `gated` or `fidelity`).
# THREADS (CPU threads per cell, default 1), DEVICE (default cuda) and EXTRA (more `ctp-bench emojicl` flags, part of every cell's knobs,
# e.g. a CPU smoke test: DEVICE=cpu EXTRA="--tasks 0,1 --max-train 32 --max-eval 16 --epochs 1").
set -euo pipefail
kit="$(cd "$1" && pwd)"; p1="$(cd "$2" && pwd)"; p2="$(cd "$3" && pwd)"
mkdir -p "$4"; out="$(cd "$4" && pwd)"
jobs="${5:-8}"; budget="${6:-300}"; precision="${7:-fp32}"
py="${CTP_PYTHON:-python3}"
torch_lib="$("$py" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ ! -x "$kit/bin/ctp-bench" ] && [ -f "$kit/bin.tar.xz" ]; then
  "$py" -c 'import sys,tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$kit/bin.tar.xz" "$kit"
fi
assets="$(mktemp -d)"
for p in "$p1" "$p2"; do
  # A part is an assets/ folder or assets.tar (one file: no per-file overhead in a carry).
  if [ -f "$p/assets.tar.gz" ]; then tar -xzf "$p/assets.tar.gz" -C "$assets" --strip-components=1
  elif [ -f "$p/assets.tar" ]; then tar -xf "$p/assets.tar" -C "$assets" --strip-components=1
  else cp -r "$p/assets/." "$assets/"; fi
done
export CTP_ASSETS="$assets" NO_COLOR=1
device="${DEVICE:-cuda}"
default_cells="ctp:0 seqft:0 joint:0 ctp-replay:0 seqft-replay:0 ctp:1 seqft:1 joint:1 ctp-replay:1
seqft-replay:1 ctp:2 seqft:2 joint:2 ctp-replay:2 seqft-replay:2 gated:0:0 gated:0:1 gated:0:2
fidelity:0:0 fidelity:0:1 fidelity:0:2 fidelity:0:3 fidelity:0:4 fidelity:0:5 fidelity:0:6"
cells="${CELLS:-$default_cells}"
started=$(date +%s)
echo "== $(echo $cells | wc -w) cells, $jobs at a time, budget ${budget}s, $device $precision" >&2
# shellcheck disable=SC2086
printf '%s\n' $cells | timeout --signal=KILL "$budget" xargs -P "$jobs" -I{} bash -c '
  IFS=: read -r m s r <<< "$1"
  row=(); [ -n "$r" ] && row=(--row-index "$r")
  log="$4/log-$m-$s${r:+-$r}.txt"
  "$0/bin/ctp-bench" emojicl --methods "$m" --seeds "$s" "${row[@]}" --device "$2" --precision "$3" --checkpoint-every 0 \
    --threads "${THREADS:-1}" --out "$4" $6 >/dev/null 2>"$log" \
    && echo "cell $1 done at $(( $(date +%s) - $5 ))s" >&2 \
    || echo "cell $1 FAILED: $(tail -3 "$log")" >&2
' "$kit" {} "$device" "$precision" "$out" "$started" "${EXTRA:-}" || echo "== budget reached or a job failed" >&2
seeds=0,1,2
"$kit/bin/ctp-bench" emojicl --summarize-only --seeds "$seeds" --out "$out" ${EXTRA:-} >/dev/null || true
ls "$out/emojicl/cells" >&2 || true
# A GPU run returns a few files only: the summary plus one archive of the cells and the logs.
(cd "$out" && tar -czf emojicl-run.tgz emojicl log-*.txt && rm -f log-*.txt) || true
echo "== $(( $(date +%s) - started ))s" >&2
rm -rf "$assets"
