#!/usr/bin/env bash
# Builds the EmojiCL table of issue #10 one (method, seed) cell at a time, committing each
# finished cell and the regenerated summary (bench/results/emojicl.{json,md}) on the current
# branch. Finished cells are skipped, so the script can be stopped and rerun at any time.
#
#   bench/run-emojicl-cells.sh [phase ...]     phases: main (default), ctp, seqft, joint, replay,
#                                              seqft-replay, ctp-replay, gated, fidelity, bn
#
# Environment: CTP_BENCH (ctp-bench binary; default: a copy of $CARGO_TARGET_DIR/release's,
# taken at start so rebuilding does not disturb a run), THREADS (libtorch threads, default 1),
# DEVICE (default auto), SEEDS (default 0,1,2), COMMIT (1 = commit each cell, default 1),
# EXTRA (more ctp-bench flags, e.g. "--epochs 10"; they become part of every cell's knobs),
# OUT (results folder, default bench/results).
# Long runs: nice -n 10 bench/run-emojicl-cells.sh main replay > /tmp/emojicl-cells.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
THREADS="${THREADS:-1}"
DEVICE="${DEVICE:-auto}"
SEEDS="${SEEDS:-0,1,2}"
COMMIT="${COMMIT:-1}"
EXTRA="${EXTRA:-}"
OUT="${OUT:-bench/results}"
CELLS="$OUT/emojicl/cells"
if [ -z "${CTP_BENCH:-}" ]; then
  bin="$CTP_CACHE/bench-bin/$$"
  mkdir -p "$bin"
  cp "$CARGO_TARGET_DIR/release/ctp-bench" "$CARGO_TARGET_DIR/release/ctpctl" "$bin/"
  CTP_BENCH="$bin/ctp-bench"
fi
phases=("$@")
[ ${#phases[@]} -eq 0 ] && phases=(main)

methods_of() {
  case "$1" in
    main) echo "ctp seqft joint" ;;
    ctp) echo "ctp" ;;
    seqft) echo "seqft" ;;
    joint) echo "joint" ;;
    replay) echo "seqft-replay ctp-replay" ;;
    seqft-replay | ctp-replay) echo "$1" ;;
    gated) echo "gated" ;;
    fidelity) echo "fidelity" ;;
    bn) echo "bn-train" ;;
    *) echo "unknown phase $1" >&2; exit 1 ;;
  esac
}

summarize() {
  # shellcheck disable=SC2086
  "$CTP_BENCH" emojicl --summarize-only --seeds "$SEEDS" --out "$OUT" $EXTRA > /dev/null
}

commit() {
  [ "$COMMIT" = 1 ] || return 0
  local paths=("$OUT/emojicl.json" "$OUT/emojicl.md" "$CELLS")
  [ -f "$OUT/emojicl-gated.svg" ] && paths+=("$OUT/emojicl-gated.svg")
  for try in 1 2 3 4 5; do
    if git add -- "${paths[@]}" && git commit -q -m "$1" -- "${paths[@]}"; then
      return 0
    fi
    sleep $((try * 5))  # another git command holds the index lock
  done
  echo "commit failed: $1" >&2
}

IFS=, read -r -a seeds <<< "$SEEDS"
for phase in "${phases[@]}"; do
  for seed in "${seeds[@]}"; do
    for m in $(methods_of "$phase"); do
      echo "== $(date -u +%H:%M:%S) $phase: $m seed $seed"
      mkdir -p "$CELLS"
      before=$(find "$CELLS" -name '*.json' | wc -l)
      # shellcheck disable=SC2086
      "$CTP_BENCH" emojicl --methods "$m" --seeds "$seed" --threads "$THREADS" \
        --device "$DEVICE" --out "$OUT" $EXTRA > /dev/null
      summarize
      after=$(find "$CELLS" -name '*.json' | wc -l)
      if [ "$after" -gt "$before" ]; then
        commit "EmojiCL cell: $m seed $seed (issue #10 protocol)"
      fi
    done
  done
done
echo "== $(date -u +%H:%M:%S) done"
