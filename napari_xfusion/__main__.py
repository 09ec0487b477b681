"""``python -m napari_xfusion``: the ``xfusion`` command line."""

import sys

from napari_xfusion.cli import main

sys.exit(main())
