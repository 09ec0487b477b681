#!/usr/bin/env bash
# Set up napari-xfusion on a fresh Debian machine with Python >= 3.10:
#  - Debian libraries napari needs under a virtual X server (Xvfb, Mesa OpenGL, Qt's xcb libs);
#  - a virtual environment in .venv with the CPU build of PyTorch installed *first*, so that
#    resolving the project's `torch` range never pulls a multi-GB CUDA build;
#  - the project itself (editable) with the napari and test extras.
# Safe to re-run: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0
  libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1)
TORCH_SPEC=${XFUSION_TORCH_SPEC:-torch==2.13.0}
PYTHON=${PYTHON:-python3}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing $TORCH_SPEC (CPU wheel)"
  .venv/bin/pip install -q "$TORCH_SPEC"
fi
echo "setup: installing napari-xfusion with the napari and test extras"
.venv/bin/pip install -q -e ".[napari,test]"
echo "setup: done (.venv/bin/xfusion --help)"
