#!/usr/bin/env bash
# Make sure the services the test suite starts are installed: Node.js and Azurite 3.35.0, and
# Debian's chromium (the report tests load the HTML reports in it, headless).
# Idempotent; installs into .services/ inside the checkout (ignored by git).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing Node.js and npm from Debian packages" >&2
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium from Debian packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
bin="$here/.services/node_modules/.bin/azurite-blob"
if [ ! -x "$bin" ] || ! grep -q '"version": "3.35.0"' "$here/.services/node_modules/azurite/package.json" 2>/dev/null; then
  echo "installing azurite@3.35.0 into .services/" >&2
  npm install --silent --no-audit --no-fund --prefix "$here/.services" azurite@3.35.0 >/dev/null
fi
echo "$bin"
