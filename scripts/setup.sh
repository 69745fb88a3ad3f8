#!/usr/bin/env bash
# Set up Shopfloor Inspector in .venv (idempotent, offline-safe once installed).
# With --test, also what the tests need: pytest, Playwright's Python client, Debian's Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
extras=""
if [ "${1:-}" = "--test" ]; then
    extras="[test]"
    if [ ! -x /usr/bin/chromium ]; then
        echo "installing Debian's chromium for the browser tests" >&2
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
    fi
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".${extras}"
