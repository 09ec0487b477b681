"""Figures and the Markdown summary of a study (:mod:`napari_xfusion.app.study`), kept as one
name for its importers: the figures are :mod:`napari_xfusion.app.study.figures`, the summary
and :func:`write_report` :mod:`napari_xfusion.app.study.summary`, the statistics they share
:mod:`napari_xfusion.app.study.stats`.
"""

from __future__ import annotations

from napari_xfusion.app.study.figures import write_figures
from napari_xfusion.app.study.stats import ordering, stats
from napari_xfusion.app.study.summary import summary_markdown, write_report

__all__ = ["ordering", "stats", "summary_markdown", "write_figures", "write_report"]
