#!/usr/bin/env bash
# Set up Shopfloor Inspector in .venv (idempotent). With --test, also what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if [ "${1:-}" = "--test" ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
else
    .venv/bin/pip install --quiet --disable-pip-version-check -e .
fi
