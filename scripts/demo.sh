#!/usr/bin/env bash
# The main job: EmojiCL (nine emoji domains, real registry data) through ctpd on the embedded
# default (SQLite + a local data dir), driven by ctpctl. Installs what it needs, builds, starts the
# daemon, trains the nine tasks with progress bars, shows the promotion gate refusing a version
# that forgot (and the manual rollback an operator would use without a gate), prints the
# accuracy / forgetting table and writes an HTML report. An anchor suite (8 emoji of every
# category that no task trains or evaluates on; docs/anchors.md) measures every version too:
# the ANCHOR column of `ctpctl versions`.
#
#   bash scripts/demo.sh            # about 7 minutes on 2 CPU cores; a GPU is used if present
#   CTP_DEMO_MAX_TRAIN=64 CTP_DEMO_EPOCHS=4 bash scripts/demo.sh   # a quicker look
#   CTP_DEMO_BIN=target/release bash scripts/demo.sh                # use already-built binaries
#   CTP_DEMO_ANCHOR=0 bash scripts/demo.sh                           # no anchor suite (the classic split)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
"$here/setup-data.sh" >/dev/null
cd "$here/.."
if [ -n "${CTP_DEMO_BIN:-}" ]; then
  bin="$CTP_DEMO_BIN"
else
  echo "== building ctpd and ctpctl" >&2
  # The same units `cargo test` (scripts/test.sh) builds: nothing is compiled twice.
  cargo build -q --bin ctpd --bin ctpctl
  bin="$CARGO_TARGET_DIR/debug"
fi
work="${CTP_DEMO_DIR:-$PWD/out/ctp-demo}"
rm -rf "$work"
mkdir -p "$work"
port="${CTP_DEMO_PORT:-50551}"
http_port="${CTP_DEMO_HTTP_PORT:-8080}"
export CTP_ADDR="http://127.0.0.1:$port"
max_train="${CTP_DEMO_MAX_TRAIN:-128}"
max_eval="${CTP_DEMO_MAX_EVAL:-64}"
epochs="${CTP_DEMO_EPOCHS:-8}"
anchor="${CTP_DEMO_ANCHOR:-8}"

echo "== exporting EmojiCL as WebDataset shards (Noto art to train, Twemoji art to evaluate)" >&2
"$bin/ctpctl" emojicl export --out "$work/emojicl" --format webdataset --max-train "$max_train" --max-eval "$max_eval" \
  --anchor-per-category "$anchor" >&2

echo "== starting ctpd (SQLite in $work/data)" >&2
"$bin/ctpd" --listen "127.0.0.1:$port" --data-dir "$work/data" --http-listen "127.0.0.1:$http_port" >"$work/ctpd.log" 2>&1 &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  "$bin/ctpctl" health >/dev/null 2>&1 && break
  sleep 0.2
done
"$bin/ctpctl" health
echo "== live dashboard: http://127.0.0.1:$http_port/ (training progress, versions, forgetting)" >&2
if [ "$anchor" -gt 0 ]; then
  echo "== an anchor suite: $anchor emoji of every category that no task trains or evaluates on" >&2
  "$bin/ctpctl" anchors add --model emoji --preset small emojicl-anchor "$work/emojicl/anchor"
fi

shards=("$work"/emojicl/[0-9][0-9]-*/)
submit() { # name dir learning-rate; returns ctpctl's exit code (5 = the gate refused the version)
  local rc=0
  "$bin/ctpctl" submit --model emoji --preset small --name "$1" --epochs "$epochs" --batch-size 32 --lr "$3" --wait "$2" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then exit "$rc"; fi
  return "$rc"
}
i=0
for dir in "${shards[@]}"; do
  name="$(basename "$dir")"
  i=$((i + 1))
  if [ "$i" -eq 5 ]; then
    echo "== a promotion gate: a new version becomes the head only if it keeps earlier tasks" >&2
    # A bound relative to the parent: the mean Rm drop on the parent's tasks. At ctpd's default
    # weights (TP 10, queue 8 x batch) a healthy version after task 4 drops at most 3.2 points,
    # Flags (which collapses every earlier domain) 7.1, and the lr 3e-3 version 11.0.
    "$bin/ctpctl" gate --model emoji --max-rm-drop 8
    echo "== task $name with a learning rate that is far too high: this version will forget" >&2
    rc=0
    submit "$name (lr 3e-3)" "$dir" 3e-3 || rc=$?
    "$bin/ctpctl" versions --model emoji
    head=$("$bin/ctpctl" --json versions --model emoji | python3 -c 'import json,sys; v=json.load(sys.stdin); print(max(x["version"] for x in v))')
    if [ "$rc" -eq 5 ]; then
      echo "== the gate refused version $head by itself: it is kept and listed, the head did not move" >&2
      echo "   (an admin could still promote it: ctpctl rollback --model emoji --to $head)" >&2
    else
      echo "== the new version is worse on earlier tasks; roll back to the previous version by hand" >&2
      "$bin/ctpctl" rollback --model emoji --to $((head - 1)) --expected-head "$head" --reason "lr 3e-3 forgot earlier tasks"
    fi
    echo "== retrain $name from the head" >&2
  fi
  submit "$name" "$dir" 3e-4 || echo "== the gate refused this version; the next task trains from the head" >&2
done

echo "== versions: Rm on every task seen so far, forgetting, momentum syncs, the anchor suite" >&2
"$bin/ctpctl" versions --model emoji
"$bin/ctpctl" report --model emoji --out "$work/report"
echo "report: $work/report/index.html"
echo "dashboard: http://127.0.0.1:$http_port/ (until this script exits)"
