#!/usr/bin/env bash
# Renders every shipped procedure's graph with the real tools: Mermaid output with the
# Mermaid CLI (headless Chromium from Debian), DOT output with Graphviz. Fails on the first
# graph either tool cannot render. Installs what it needs (README: "Checking the graphs").
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
command -v dot >/dev/null 2>&1 || need+=(graphviz)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

work="${TMPDIR:-/tmp}/sopflow-mmdc"
mkdir -p "$work"
if [ ! -x "$work/node_modules/.bin/mmdc" ]; then
  # Chromium comes from Debian; puppeteer must not download its own browser.
  (cd "$work" && PUPPETEER_SKIP_DOWNLOAD=1 npm install --silent --no-audit --no-fund @mermaid-js/mermaid-cli@11.17.0 >/dev/null)
fi
printf '{"executablePath":"%s","args":["--no-sandbox","--disable-gpu"]}\n' "$(command -v chromium)" > "$work/puppeteer.json"

cargo build -q --bin sopflow
bin=target/debug/sopflow
count=0
for f in procedures/*.toml; do
  s=$(basename "$f" .toml)
  "$bin" graph "$f" --format mermaid > "$work/$s.mmd"
  (cd "$work" && ./node_modules/.bin/mmdc -q -p puppeteer.json -i "$s.mmd" -o "$s.svg") \
    || { echo "Mermaid CLI could not render $f"; exit 1; }
  "$bin" graph "$f" --format dot | dot -Tsvg -o "$work/$s.dot.svg" \
    || { echo "Graphviz could not render $f"; exit 1; }
  count=$((count + 1))
done
echo "rendered $count procedures with the Mermaid CLI and Graphviz"
