"""Accuracy without ground truth (issue 17): leave-one-key-out and LR consistency.

- :mod:`.loo`: :func:`leave_one_key_out` withholds each interior HR key in turn, reconstructs
  its time from the keys around it through the shared pipeline and scores it against the real
  key; :class:`ValidationResult` (rows, summary, CSV, plot).
- :mod:`.consistency`: :func:`lr_consistency` bins a reconstruction 4x4 and compares it with
  the LR frame at its time, flagging what the LR noise does not explain; :class:`LrChecker`
  and :func:`consistency_table` / :func:`export_consistency` do it for every frame of a run.
- :mod:`.lr_model`: the LR side of that check, its map into the HR keys' units
  (:class:`LrMapping`, :func:`lr_mapping`) and its noise (:class:`LrNoise`,
  :func:`estimate_lr_noise`); re-exported by :mod:`.consistency`.
- :mod:`.plots`: the figure.

Every name is importable from ``napari_xfusion.app.validation``.
"""

from __future__ import annotations

from napari_xfusion.app.validation.consistency import (
    FLAG_FRACTION,
    MIN_TOLERANCE,
    Z_THRESHOLD,
    ConsistencyRow,
    ConsistencyTable,
    LrChecker,
    LrConsistency,
    LrMapping,
    LrNoise,
    consistency_table,
    detector_mapping,
    estimate_lr_noise,
    export_consistency,
    fit_mapping,
    lr_consistency,
    lr_mapping,
)
from napari_xfusion.app.validation.loo import (
    LOO_COLUMNS,
    LooProgress,
    LooRow,
    ValidationResult,
    iter_leave_one_key_out,
    keys_without,
    leave_one_key_out,
    withheld_keys,
)

__all__ = [
    "FLAG_FRACTION",
    "LOO_COLUMNS",
    "MIN_TOLERANCE",
    "Z_THRESHOLD",
    "ConsistencyRow",
    "ConsistencyTable",
    "LooProgress",
    "LooRow",
    "LrChecker",
    "LrConsistency",
    "LrMapping",
    "LrNoise",
    "ValidationResult",
    "consistency_table",
    "detector_mapping",
    "estimate_lr_noise",
    "export_consistency",
    "fit_mapping",
    "iter_leave_one_key_out",
    "keys_without",
    "leave_one_key_out",
    "lr_consistency",
    "lr_mapping",
    "withheld_keys",
]
