#!/usr/bin/env bash
# Set up Shopfloor Inspector in .venv (idempotent, offline-safe once installed).
# With --test, also what the tests need: pytest, Playwright's Python client, and Debian's
# Chromium (browser tests), Mosquitto (MQTT broker) and PostgreSQL (plant history database).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
extras=""
if [ "${1:-}" = "--test" ]; then
    extras="[test]"
    missing=""
    [ -x /usr/bin/chromium ] || missing="$missing chromium"
    [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
    if [ -n "$missing" ]; then
        echo "installing Debian packages for the tests:$missing" >&2
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        # shellcheck disable=SC2086
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null
    fi
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".${extras}"
