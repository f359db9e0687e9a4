#!/usr/bin/env bash
# Real-size benchmark of `onnx-diagnostic validate` (see README.md next to this script).
#
# Usage: benches/real_size/run.sh [llama-3.2-1b|qwen2.5-0.5b|qwen3-moe-2l|sd15-unet|all] [VALIDATE_ARGS...]
#
# Sets up what is missing (scripts/setup), builds the CLI (release), writes an untrained
# bfloat16 checkpoint of each model's real shape into ${REAL_SIZE_DIR:-target/real_size}/<name>
# (make_checkpoint.py, cached), then runs under /usr/bin/time -v
#   target/release/onnx-diagnostic validate -m <dir> --run --export onnx -o <dir>-dump [VALIDATE_ARGS...]
# and prints, per model: exit status, wall time, peak resident memory, and the discrepancy,
# memory and time keys of the `-- summary --` block. Exit status: 0 when every validate
# succeeded, 1 when one failed, 2 on a usage error or when /usr/bin/time is missing.
# REAL_SIZE_DIR, when relative, is relative to the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

usage() {
  echo "usage: benches/real_size/run.sh [llama-3.2-1b|qwen2.5-0.5b|qwen3-moe-2l|sd15-unet|all] [VALIDATE_ARGS...]" >&2
  exit 2
}

which="${1:-all}"
[ "$#" -gt 0 ] && shift
case "$which" in
  all) models=(llama-3.2-1b qwen2.5-0.5b qwen3-moe-2l sd15-unet) ;;
  llama-3.2-1b | qwen2.5-0.5b | qwen3-moe-2l | sd15-unet) models=("$which") ;;
  -h | --help) usage ;;
  *)
    echo "run.sh: unknown model '$which'" >&2
    usage
    ;;
esac

if [ ! -x /usr/bin/time ]; then
  echo "run.sh: /usr/bin/time is missing (GNU time, for the peak memory)." >&2
  echo "        Install it with: apt-get install time   (Debian/Ubuntu; sudo if not root)" >&2
  exit 2
fi

scripts/setup
cargo build --release --locked -p onnx-diagnostic-cli

out_root="${REAL_SIZE_DIR:-target/real_size}"
mkdir -p "$out_root"
python=.venv/bin/python
cli=target/release/onnx-diagnostic

# "h:mm:ss" or "m:ss.ss" (GNU time's Elapsed) -> seconds.
to_seconds() {
  awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.2f", s }' <<<"$1"
}

failed=0
report=""
for name in "${models[@]}"; do
  dir="$out_root/$name"
  log="$out_root/$name.validate.log"
  err="$out_root/$name.validate.stderr"
  tim="$out_root/$name.time"

  echo "== $name: checkpoint in $dir"
  "$python" benches/real_size/make_checkpoint.py "$name" "$dir"

  echo "== $name: $cli validate -m $dir --run --export onnx -o $dir-dump $*"
  echo "   (stdout: $log, stderr: $err, /usr/bin/time -v: $tim)"
  set +e
  /usr/bin/time -v -o "$tim" "$cli" validate -m "$dir" --run --export onnx -o "$dir-dump" "$@" \
    >"$log" 2>"$err"
  status=$?
  set -e
  [ "$status" -eq 0 ] || failed=1

  elapsed="$(sed -n 's/^[[:space:]]*Elapsed (wall clock) time.*): *//p' "$tim" 2>/dev/null | tail -n1)"
  rss_kb="$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): *//p' "$tim" 2>/dev/null | tail -n1)"
  wall_s="?"
  peak_gb="?"
  [ -n "$elapsed" ] && wall_s="$(to_seconds "$elapsed")"
  [ -n "$rss_kb" ] && peak_gb="$(awk -v k="$rss_kb" 'BEGIN { printf "%.2f", k / 1048576 }')"

  keys="$(awk '/^-- summary --$/ { on = 1; next }
               on && /^:(disc_onnx_ort_run[^,]*_abs|memory_peak|time_[^,]*),/ { print "    " $0 }' "$log")"

  block="-- $name: exit status $status, wall ${wall_s} s (${elapsed:-?}), peak RSS ${peak_gb} GB"
  if [ "$name" = llama-3.2-1b ] && [ "$wall_s" != "?" ] && [ "$peak_gb" != "?" ]; then
    goal="$(awk -v w="$wall_s" -v m="$peak_gb" 'BEGIN {
      print ((m <= 12 && w <= 60) ? "met" : "NOT met") " (goal: peak <= 12 GB, wall <= 60 s)" }')"
    block+=$'\n'"    goal $goal"
  fi
  if [ -n "$keys" ]; then
    block+=$'\n'"$keys"
  else
    block+=$'\n'"    (no summary keys in $log)"
  fi
  if [ "$status" -ne 0 ]; then
    block+=$'\n'"    last lines of $err:"$'\n'"$(tail -n 5 "$err" | sed 's/^/      /')"
  fi
  report+="$block"$'\n'
done

echo
echo "== real-size results"
printf '%s' "$report"
exit "$failed"
