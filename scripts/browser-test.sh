#!/usr/bin/env bash
# Drives the web app (`sopflow serve`, pages at /) through its journeys in Debian's Chromium
# with playwright-core and Node's test runner (tests/browser/): a complaint from registration
# to closure by three people with a refused form corrected, a sign-off with its meaning, a
# delegation, an auditor searching, verifying and exporting, a refusal for someone without
# the role, CSRF and XSS, the security headers.
#
# It builds the debug binary, starts a server on a temporary data directory with the manual
# clock on a free loopback port, installs playwright-core from tests/browser/package-lock.json
# when node_modules is missing or older than the lock file (no browser is ever downloaded:
# the system's Chromium is used), runs the tests, writes full-page screenshots of the main
# pages to target/browser/, stops the server and exits non-zero on any failed test, on a
# server that died or logged a panic or an internal error, or on a server that did not stop
# cleanly.
#
# Needs: Rust, Node 20 or newer with npm (the npm registry reachable the first time),
# Chromium (apt-get install -y chromium).
# Usage: scripts/browser-test.sh [node --test options, e.g. --test-name-pattern=CSRF]
# Environment:
#   SOPFLOW           a built binary to use instead of building target/debug/sopflow
#   CHROMIUM          the browser (default /usr/bin/chromium)
#   BROWSER_TEST_OUT  where screenshots and the server log go (default target/browser)
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
OUT="${BROWSER_TEST_OUT:-target/browser}"
# The whole test run is stopped after this long, whatever it is doing.
RUN_LIMIT=900

for tool in curl node npm; do
  command -v "$tool" >/dev/null || { echo "browser-test needs $tool" >&2; exit 2; }
done
[ -x "$CHROMIUM" ] || { echo "browser-test needs Chromium at $CHROMIUM (apt-get install -y chromium)" >&2; exit 2; }

started=$(date +%s)
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/*.png "$OUT/server.log"
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

# --- playwright-core ------------------------------------------------------------------------
# npm keeps a copy of the lock it installed in node_modules/.package-lock.json.
if [ ! -f tests/browser/node_modules/.package-lock.json ] \
  || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ] \
  || [ tests/browser/package.json -nt tests/browser/node_modules/.package-lock.json ]; then
  echo "== npm ci (tests/browser)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi

# --- the server -----------------------------------------------------------------------------
BIN="${SOPFLOW:-}"
if [ -z "$BIN" ]; then
  echo "== building the debug binary"
  cargo build --quiet --bin sopflow
  BIN=target/debug/sopflow
fi

echo "== starting a server (manual clock, data in $DATA)"
# The server watches and may write its procedure files (a deployment saves the text): it
# gets copies, so a test never changes the repository's own.
mkdir -p "$DATA/site"
cp -r procedures calendars registers org.toml "$DATA/site/"
# A webhook subscription to a receiver that is never there, for the Deliveries page; its
# secret is a throwaway one made up here.
cp tests/browser/webhooks.toml "$DATA/site/webhooks.toml"
SOPFLOW_BROWSER_HOOK_SECRET="whsec_$(head -c 32 /dev/urandom | base64)" \
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
case "$ADDR" in 127.*) ;; *) echo "refusing to test non-loopback $ADDR" >&2; exit 1 ;; esac
TOKENS="$DATA/store/demo-tokens.txt"
[ -s "$TOKENS" ] || { echo "no demo tokens in $TOKENS" >&2; exit 1; }

# --- the journeys ---------------------------------------------------------------------------
echo "== browser journeys against http://$ADDR; screenshots in $OUT"
failed=0
rc=0
BASE_URL="http://$ADDR" TOKENS_FILE="$TOKENS" SCREENSHOTS_DIR="$OUT" CHROMIUM="$CHROMIUM" \
  timeout --kill-after=10 "$RUN_LIMIT" \
  node --test --test-concurrency=1 --test-reporter=spec "$@" tests/browser/journeys.test.mjs || rc=$?
if [ "$rc" != 0 ]; then
  echo "browser tests failed (exit $rc)" >&2
  failed=1
fi
if ! kill -0 "$SERVER" 2>/dev/null; then
  echo "the server died during the tests; see $OUT/server.log" >&2
  SERVER=""
  failed=1
fi

# --- stop and judge -------------------------------------------------------------------------
if [ -n "$SERVER" ]; then
  kill -TERM "$SERVER"
  rc=0
  wait "$SERVER" || rc=$?
  SERVER=""
  if [ "$rc" != 0 ]; then echo "the server exited $rc on SIGTERM" >&2; failed=1; fi
fi
if grep -E 'internal error|panicked' "$LOGS/server.log" >&2; then
  echo "the server logged internal errors or panics (above; $OUT/server.log)" >&2
  failed=1
fi
echo "== done in $(( $(date +%s) - started ))s; screenshots and the server log in $OUT"
if [ "$failed" != 0 ]; then echo "browser-test: FAILED" >&2; exit 1; fi
echo "browser-test: passed"
