#!/usr/bin/env bash
# The GUI smoke tests under PyQt6 (napari deprecates PyQt5; PyQt5 stays the default install).
#
# Makes .venv-pyqt6: a small venv that sees the packages of .venv (napari, torch, the project)
# through a .pth file and adds only PyQt6, then runs the napari tests with QT_API=pyqt6 so that
# qtpy (and napari) pick PyQt6. Needs .venv (scripts/setup.sh) first.
#
#   bash scripts/test_pyqt6.sh                 # the napari tests
#   bash scripts/test_pyqt6.sh -k usability    # extra pytest arguments
#   VENV=/tmp/pyqt6 MAIN_VENV=/path/.venv bash scripts/test_pyqt6.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN_VENV=${MAIN_VENV:-.venv}
VENV=${VENV:-.venv-pyqt6}
PY="$MAIN_VENV/bin/python"
[ -x "$PY" ] || { echo "no $PY: run scripts/setup.sh first (or set MAIN_VENV)" >&2; exit 1; }

started=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    # The same interpreter as .venv, so its site-packages (compiled for it) import here.
    base=$("$PY" -c 'import sys; print(sys.base_prefix)')
    "$base/bin/python3" -m venv "$VENV"
    site_main=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    site_new=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # Appended after the venv's own site-packages: PyQt6 here, everything else from .venv.
    echo "$site_main" > "$site_new/_main_venv.pth"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "PyQt6>=6.5"
fi
echo "PyQt6 venv ready in $(( $(date +%s) - started )) s"
export QT_API=pyqt6
"$VENV/bin/python" -c 'import qtpy; assert qtpy.API_NAME == "PyQt6", qtpy.API_NAME; print("qtpy:", qtpy.API_NAME, qtpy.QT_VERSION)'
exec "$VENV/bin/python" -m pytest -p no:cacheprovider tests/test_napari_widget.py \
    tests/test_napari_usability.py tests/test_napari_io.py "$@"
