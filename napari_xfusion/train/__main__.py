"""``python -m napari_xfusion.train`` and ``torchrun -m napari_xfusion.train``."""

import sys

from napari_xfusion.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
