#!/usr/bin/env bash
# A complaint from registration to closure, through the HTTP API, as three people:
#   liu.yang (sales) takes the customer's call and starts the complaint;
#   nobody registers it within 24 hours, so the deadline breaches and the task is escalated
#   to the management representative, qian.li, who registers and classifies it;
#   liu.yang resolves it (general complaints go to sales, seed 002 §4.5);
#   xu.na (follow-up) calls the customer back, who is satisfied: the complaint is closed.
# Time runs on the server's manual clock, moved by it.admin, so the breach happens at once.
#
# Needs: a built sopflow (README: `cargo build --release`), curl and jq.
# Usage: examples/walkthrough.sh            (the newer of target/release and target/debug)
#        SOPFLOW=path/to/sopflow examples/walkthrough.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${SOPFLOW:-}"
if [ -z "$BIN" ]; then
  # The newer of the release and debug builds.
  BIN=$(ls -t target/release/sopflow target/debug/sopflow 2>/dev/null | head -1 || true)
fi
[ -n "$BIN" ] || { echo "build sopflow first: cargo build --release" >&2; exit 1; }
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "this walkthrough needs $tool (apt-get install -y $tool)" >&2; exit 1; }
done

DATA="$(mktemp -d)"
LOG="$DATA/server.log"
cleanup() {
  if [ -n "${SERVER:-}" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT

# Monday 2 November 2026, 09:00 in Shanghai (the default calendar's zone).
"$BIN" serve --data-dir "$DATA/store" --listen 127.0.0.1:0 \
  --clock manual --clock-start 2026-11-02T09:00:00+08:00 >"$LOG" 2>"$DATA/server.err" &
SERVER=$!
for _ in $(seq 1 100); do
  ADDR=$(sed -n 's/^sopflow serving http:\/\/\([^ ]*\).*/\1/p' "$LOG")
  [ -n "$ADDR" ] && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$DATA/server.err" >&2; exit 1; }
  sleep 0.1
done
[ -n "${ADDR:-}" ] || { echo "the server did not start" >&2; cat "$DATA/server.err" >&2; exit 1; }
URL="http://$ADDR"
token() { awk -v u="$1" '$1 == u { print $2 }' "$DATA/store/demo-tokens.txt"; }

# call USER METHOD PATH [JSON] — prints the body; fails on an unexpected status.
call() {
  local user="$1" method="$2" path="$3" body="${4:-}"
  local args=(-sS -o "$DATA/body" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $(token "$user")")
  if [ -n "$body" ]; then args+=(-H 'Content-Type: application/json' -d "$body"); fi
  local status
  status=$(curl "${args[@]}" "$URL$path")
  if [ "${status:0:1}" != 2 ]; then
    echo "$user $method $path -> $status" >&2; cat "$DATA/body" >&2; echo >&2; exit 1
  fi
  cat "$DATA/body"
}
say() { printf '\n== %s\n' "$*"; }

say "liu.yang (sales) starts a complaint from a customer's call"
inst=$(call liu.yang POST /v1/instances \
  '{"procedure": "complaint-handling", "data": {"customer": "Huadong Packaging Co.", "contact": "Mr Zhang, 021-5555-0101"}}')
ID=$(jq -r .id <<<"$inst")
jq -r '"instance \(.id): \(.status); open: \([.tasks[] | "\(.step) for \(.roles | join(",")) due \(.due)"] | join("; "))"' <<<"$inst"

say "xu.na (follow-up) sees it in her worklist, but nobody registers it for 25 hours"
call xu.na GET /v1/tasks | jq -r '.items[] | "  \(.step) of \(.procedure), due \(.due)"'
call it.admin POST /v1/admin/clock/advance '{"by": "25h"}' | jq -r '"clock now \(.now); \(.fired) deadline timer(s) fired"'

say "the breach escalated the task to the management representative, qian.li"
TASK=$(call qian.li GET "/v1/tasks?procedure=complaint-handling" | jq -r '.items[0].id')
call qian.li GET "/v1/tasks/$TASK" | jq -r '"  \(.step): offered to \(.roles | join(", ")); deadline \(.deadline); overdue since \(.due)"'

say "qian.li registers and classifies it as a general complaint"
call qian.li POST "/v1/tasks/$TASK/complete" '{
  "form": {"channel": "telephone", "complaint": "The replacement roller arrived damaged.",
           "severity": "general", "first_answer": "A new roller ships today by courier.", "received_at": "2026-11-02T08:30:00Z"},
  "comment": "Registered late: the follow-up desk was unstaffed on Monday."}' |
  jq -r '"  now open: \([.tasks[] | .step] | join(", "))"'

say "liu.yang (sales) resolves it"
TASK=$(call liu.yang GET /v1/tasks | jq -r --arg id "$ID" '[.items[] | select(.instance == $id)][0].id')
call liu.yang POST "/v1/tasks/$TASK/complete" \
  '{"form": {"resolution": "Replacement roller delivered and fitted on site.", "resolved_on": "2026-11-04"}}' |
  jq -r '"  now open: \([.tasks[] | "\(.step) due \(.due)"] | join(", "))"'

say "xu.na follows up; the customer is satisfied"
TASK=$(call xu.na GET /v1/tasks | jq -r --arg id "$ID" '[.items[] | select(.instance == $id)][0].id')
call xu.na POST "/v1/tasks/$TASK/claim" >/dev/null
call xu.na POST "/v1/tasks/$TASK/complete" \
  '{"form": {"customer_satisfied": true, "satisfaction_score": 100, "customer_evaluation": "Fast and polite; roller works."}}' |
  jq -r '"  instance \(.id): \(.status) at \(.end_step)"'

say "the history, as the auditor jiang.audit reads it"
call jiang.audit GET "/v1/instances/$ID/history" | jq -r '.events[] |
  "\(.seq | tostring | (" " * (3 - length)) + .)  \(.at)  \((.by.user // "(engine)") | . + (" " * (12 - length)))  \(.kind)\(
    if .details.step then " " + .details.step else "" end)\(
    if .details.outcome then " -> " + .details.outcome else "" end)\(
    if .details.role then " [" + .details.role + "]" else "" end)\(
    if .details.comment then "  \"" + .details.comment + "\"" else "" end)"'

say "the auditor checks every hash chain, and asks what qian.li did"
call jiang.audit GET /v1/audit/verify |
  jq -r 'if .intact then "  intact: \(.instances) instance(s), \(.events) events" else "  BROKEN: \(.first_break)" end'
call jiang.audit GET "/v1/audit/events?actor=qian.li" | jq -r '.items[] |
  "  \(.event.at)  \(.event.kind) \(.event.details.step // "")  link \(.hash[0:16])…"'

say "the service KPIs of November, against the objectives of seed 002 §4.1.2"
call jiang.audit GET "/v1/reports/kpis?procedure=complaint-handling&from=2026-11-01&to=2026-12-01" | jq -r '
  "  started \(.instances.started), completed \(.instances.completed), open \(.instances.open), breaches \(.instances.breaches), escalations \(.instances.escalations)",
  (.rates[] | "  \(.title): \(.rate // "n/a")% \(if .met == true then "(objective met)" elif .met == false then "(objective MISSED)" else "" end)")'

kill -TERM "$SERVER"
wait "$SERVER"
SERVER=""
say "server stopped cleanly"
