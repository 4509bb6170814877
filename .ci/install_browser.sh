#!/usr/bin/env bash
# Install what the browser end-to-end tests (tests/e2e, pytest -m browser) need:
# Debian's chromium and the Playwright Python driver. Idempotent: a second run installs
# nothing. Playwright's own browser download (`playwright install`) is deliberately NOT
# used: the tests drive the system chromium at /usr/bin/chromium.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
fi

if [ ! -x /usr/bin/chromium ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
fi

PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
  "$PYTHON" -m pip install --quiet playwright
fi

/usr/bin/chromium --version 2>/dev/null
"$PYTHON" -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"
