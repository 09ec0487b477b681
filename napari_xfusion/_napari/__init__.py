"""The napari plugin: reader, writer, sample data and the fusion, attention and metrics docks.

Qt and napari are imported only here (and by :mod:`napari_xfusion.cli` when it opens the GUI);
the science lives in :mod:`napari_xfusion.core` and runs through :mod:`napari_xfusion.engine`.
"""
