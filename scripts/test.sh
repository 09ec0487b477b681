#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the checks CI runs: ruff lint + format, the import-layer
# contracts, and the whole pytest suite (Qt tests under Xvfb through pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
