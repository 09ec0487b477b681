"""``python -m napari_xfusion.cli`` (what ``torchrun -m napari_xfusion.cli fuse ...`` runs)."""

import sys

from napari_xfusion.cli import main

sys.exit(main())
