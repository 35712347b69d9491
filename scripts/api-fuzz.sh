#!/usr/bin/env bash
# Throws generated requests at the HTTP API with Schemathesis, driven by the OpenAPI document
# the server serves (/v1/openapi.json): every operation, every check (no 5xx, responses and
# status codes as documented, invalid input refused, valid input accepted, auth enforced,
# unsupported methods 405 with Allow, ...), the examples, coverage, fuzzing and stateful
# phases, as a member of staff (xu.na), as the auditor (jiang.audit) and as it.admin.
#
# It builds the release binary, starts a server on a temporary data directory with the manual
# clock on a free loopback port, seeds a few instances, installs Schemathesis (pinned) into a
# virtualenv, runs it, stops the server and exits non-zero on any failure, on a server that
# died or logged an internal error, or on a server that did not stop cleanly.
#
# Needs: Rust, curl, jq, Python 3 with venv and pip (PyPI reachable the first time).
# Usage: scripts/api-fuzz.sh
# Environment:
#   API_FUZZ_EXAMPLES  test cases per operation and phase (default 50)
#   API_FUZZ_SEED      Schemathesis seed (default 1; the server's ids differ run to run)
#   API_FUZZ_WORKERS   concurrent Schemathesis workers (default 1)
#   API_FUZZ_VENV      where the virtualenv lives (default ~/.cache/sopflow-api-fuzz/…)
#   API_FUZZ_OUT       where logs and reports go (default target/api-fuzz)
#   SOPFLOW            a built binary to use instead of building target/release/sopflow
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
EXAMPLES="${API_FUZZ_EXAMPLES:-50}"
SEED="${API_FUZZ_SEED:-1}"
WORKERS="${API_FUZZ_WORKERS:-1}"
VENV="${API_FUZZ_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sopflow-api-fuzz/venv-$ST_VERSION}"
OUT="${API_FUZZ_OUT:-target/api-fuzz}"
# Each Schemathesis run is stopped after this long, whatever it is doing.
RUN_LIMIT=300

for tool in curl jq python3; do
  command -v "$tool" >/dev/null || { echo "api-fuzz needs $tool" >&2; exit 2; }
done

started=$(date +%s)
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# Everything is written under a private temporary directory while it runs (the shared target
# directory may be cleaned meanwhile) and the logs are copied to $OUT at the end.
DATA="$(mktemp -d)"
LOGS="$DATA/logs"
mkdir -p "$LOGS"
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  # server.out lists this run's demo tokens: useless once the server is gone, but not kept.
  rm -f "$LOGS/server.out"
  { mkdir -p "$OUT" && cp -r "$LOGS/." "$OUT/"; } 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

# --- the server -----------------------------------------------------------------------------
BIN="${SOPFLOW:-}"
if [ -z "$BIN" ]; then
  echo "== building the release binary"
  cargo build --release --quiet --bin sopflow
  BIN=target/release/sopflow
fi

echo "== starting a server (manual clock, data in $DATA)"
# The server watches and may write its procedure files (a deployment saves the text): it
# gets copies, so a test never changes the repository's own.
mkdir -p "$DATA/site"
cp -r procedures calendars registers org.toml "$DATA/site/"
"$BIN" serve --data-dir "$DATA/store" --listen 127.0.0.1:0 --request-timeout 10 \
  --procedures "$DATA/site/procedures" --directory "$DATA/site/org.toml" \
  --clock manual --clock-start 2026-11-02T09:00:00+08:00 >"$LOGS/server.out" 2>"$LOGS/server.log" &
SERVER=$!
ADDR=""
for _ in $(seq 1 100); do
  ADDR=$(sed -n 's/^sopflow serving http:\/\/\([^ ]*\).*/\1/p' "$LOGS/server.out" 2>/dev/null || true)
  [ -n "$ADDR" ] && break
  kill -0 "$SERVER" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$ADDR" ]; then echo "the server did not start" >&2; cat "$LOGS/server.log" >&2; exit 1; fi
case "$ADDR" in 127.*) ;; *) echo "refusing to fuzz non-loopback $ADDR" >&2; exit 1 ;; esac
URL="http://$ADDR"
TOKENS="$DATA/store/demo-tokens.txt"
token() { awk -v u="$1" '$1 == u { print $2 }' "$TOKENS"; }

# call USER METHOD PATH [JSON]: prints the body, fails on a non-2xx status.
call() {
  local user="$1" method="$2" path="$3" body="${4:-}" status
  local args=(-sS -o "$DATA/body" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $(token "$user")")
  if [ -n "$body" ]; then args+=(-H 'Content-Type: application/json' -d "$body"); fi
  status=$(curl "${args[@]}" "$URL$path")
  if [ "${status:0:1}" != 2 ]; then
    echo "seeding: $user $method $path -> $status" >&2; cat "$DATA/body" >&2; echo >&2; exit 1
  fi
  cat "$DATA/body"
}

# --- seed data, so the fuzzer reaches real instances and tasks ------------------------------
echo "== seeding"
for n in 1 2 3 4 5; do
  call xu.na POST /v1/instances "{\"procedure\": \"complaint-handling\",
    \"data\": {\"customer\": \"Customer $n\", \"contact\": \"Contact $n\"}}" >/dev/null
done
# One complaint further on (a task for sales), one with a comment.
first=$(call xu.na GET '/v1/tasks?procedure=complaint-handling' | jq -r '.items[0].id')
call xu.na POST "/v1/tasks/$first/complete" '{"form": {"channel": "telephone",
  "complaint": "Roller damaged", "severity": "general", "first_answer": "A new one ships today", "received_at": "2026-11-02T08:30:00Z"}}' >/dev/null
inst=$(call it.admin GET /v1/instances | jq -r '.items[1].id')
call it.admin POST "/v1/instances/$inst/comments" '{"text": "Seeded for the fuzzer"}' >/dev/null

# Known ids, offered to the fuzzer beside the values it makes up.
json_list() { jq -R . | jq -sc .; }
INSTANCES=$(call it.admin GET '/v1/instances?limit=500' | jq -r '.items[].id' | json_list)
TASKS=$( (call xu.na GET /v1/tasks; call liu.yang GET /v1/tasks) | jq -r '.items[].id' | json_list)
PROCEDURES=$(call it.admin GET /v1/procedures | jq -r '.items[].id' | json_list)
USERS=$(awk '{ print $1 }' "$TOKENS" | json_list)

# --- Schemathesis ---------------------------------------------------------------------------
if [ "$("$VENV/bin/python" -m pip show schemathesis 2>/dev/null | sed -n 's/^Version: //p')" != "$ST_VERSION" ]; then
  echo "== installing schemathesis $ST_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi

CONFIG="$LOGS/schemathesis.toml"
cat >"$CONFIG" <<EOF
# Written by scripts/api-fuzz.sh.

[checks.positive_data_acceptance]
# 422 is this API's documented answer to a well-formed request the engine will not carry
# out (an unknown procedure, a form that fails the procedure's rules, a clock amount it
# cannot read): the schema describes shape, the procedures decide meaning.
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[phases.coverage]
# \`?limit=1&limit=2\` and the like must be refused, not read as one of them.
generate-duplicate-query-parameters = true

[dictionaries.instances]
values = $INSTANCES

[dictionaries.tasks]
values = $TASKS

[dictionaries.procedures]
values = $PROCEDURES

[dictionaries.users]
values = $USERS

[[operations]]
include-path-regex = '^/v1/instances/\{id\}'
parameters = { "path.id" = { dictionary = "instances", probability = 0.7 } }

[[operations]]
include-path-regex = '^/v1/tasks/\{id\}/delegate$'
parameters = { "path.id" = { dictionary = "tasks", probability = 0.7 }, "body.to" = { dictionary = "users", probability = 0.7 } }

[[operations]]
include-path-regex = '^/v1/tasks/\{id\}(/(claim|release|complete))?$'
parameters = { "path.id" = { dictionary = "tasks", probability = 0.7 } }

[[operations]]
include-operation-id = "start_instance"
parameters = { "body.procedure" = { dictionary = "procedures", probability = 0.7 } }

[[operations]]
include-operation-id = ["list_instances", "list_tasks"]
parameters = { "query.procedure" = { dictionary = "procedures", probability = 0.5 } }

[[operations]]
include-operation-id = ["get_procedure", "procedure_graph"]
parameters = { "path.id" = { dictionary = "procedures", probability = 0.7 } }

[[operations]]
include-operation-id = "audit_verify"
parameters = { "query.instance" = { dictionary = "instances", probability = 0.5 } }

[[operations]]
# \`from\` must be before \`to\` (or before now when \`to\` is left out): a rule between two
# parameters that OpenAPI cannot state, answered 400.
include-operation-id = ["audit_events", "kpi_report", "audit_export"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422"]
parameters = { "query.procedure" = { dictionary = "procedures", probability = 0.5 }, "query.actor" = { dictionary = "users", probability = 0.5 } }
EOF

failed=0
run() {
  local name="$1" user="$2" rc=0
  echo "== schemathesis as $user ($EXAMPLES examples per operation); log: $OUT/$name.log"
  (cd "$DATA" && timeout --kill-after=10 "$RUN_LIMIT" "$VENV/bin/st" --no-color --config-file "$CONFIG" \
    run "$URL/v1/openapi.json" \
    --header "Authorization: Bearer $(token "$user")" \
    --checks all \
    --max-examples "$EXAMPLES" \
    --seed "$SEED" \
    --workers "$WORKERS" \
    --request-timeout 15 \
    --max-response-time 5 \
    --report junit,ndjson --report-dir "$LOGS/$name-report" \
    >"$LOGS/$name.log" 2>&1) || rc=$?
  sed -n '/^=* SUMMARY =*$/,$p' "$LOGS/$name.log" | grep -E '^(  (Selected|Tested)|  [0-9]+ generated|  [❌⚠]|=+ .* =+$)' || true
  if [ "$rc" != 0 ]; then
    echo "schemathesis as $user failed (exit $rc); see $OUT/$name.log" >&2
    failed=1
  fi
  if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "the server died during the run as $user; see $OUT/server.log" >&2
    SERVER=""
    failed=1
  fi
}
# Staff first: the admin run cancels what it finds, closing the seeded tasks. The auditor
# reads everything and may change nothing.
run staff xu.na
[ -n "$SERVER" ] && run auditor jiang.audit
[ -n "$SERVER" ] && run admin it.admin

# --- stop and judge -------------------------------------------------------------------------
if [ -n "$SERVER" ]; then
  kill -TERM "$SERVER"
  rc=0
  wait "$SERVER" || rc=$?
  SERVER=""
  if [ "$rc" != 0 ]; then echo "the server exited $rc on SIGTERM" >&2; failed=1; fi
fi
if grep -E 'internal error|panicked' "$LOGS/server.log" >&2; then
  echo "the server logged internal errors (above; $OUT/server.log)" >&2
  failed=1
fi
echo "== done in $(( $(date +%s) - started ))s; logs and reports in $OUT"
if [ "$failed" != 0 ]; then echo "api-fuzz: FAILED" >&2; exit 1; fi
echo "api-fuzz: passed"
