#!/usr/bin/env bash
# Run `roolog convert` from cron or any scheduler, as is.
#
#   roolog-cron.sh INPUT OUT KEY [more roolog convert options...]
#
# - Events go to a JSON-lines log (one object per line: start, skipped/done per partition, warnings,
#   summary), $ROOLOG_LOG, default ~/.cache/roolog/<name of OUT>.jsonl. Nothing is printed on success, so
#   cron mails only failures.
# - Re-running is safe: unchanged partitions are skipped; a crashed run is finished by the next one.
# - Another run still holding OUT's lock (exit 75) is not a failure here: the next tick will do the work.
#   Set ROOLOG_LOCKED_EXIT=75 to pass that code on to a scheduler that retries.
# - ROOLOG_BIN picks the roolog executable (default: roolog on PATH); ROOLOG_TIMEOUT (e.g. 2h) bounds a run.
set -uo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 INPUT OUT KEY [roolog convert options...]" >&2
    exit 2
fi
input=$1 out=$2 key=$3
shift 3
bin=${ROOLOG_BIN:-roolog}
log=${ROOLOG_LOG:-$HOME/.cache/roolog/$(basename "$out").jsonl}
mkdir -p "$(dirname "$log")"

cmd=("$bin" convert "$input" -o "$out" --key "$key" --log-format json --quiet "$@")
if [ -n "${ROOLOG_TIMEOUT:-}" ]; then
    cmd=(timeout --signal=TERM "$ROOLOG_TIMEOUT" "${cmd[@]}")
fi
"${cmd[@]}" 2>>"$log" >/dev/null
rc=$?

case $rc in
    0) exit 0 ;;
    75) printf '{"event": "locked", "output": "%s"}\n' "$out" >>"$log"
        exit "${ROOLOG_LOCKED_EXIT:-0}" ;;
    *) echo "roolog convert $input -> $out failed with exit code $rc; see $log:" >&2
       tail -n 5 "$log" >&2
       exit "$rc" ;;
esac
