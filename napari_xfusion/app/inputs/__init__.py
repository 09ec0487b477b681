"""One input policy for both faces: a :class:`RunConfig` plus arrays or paths -> what the
engine runs on (:class:`PreparedInputs`), with every shape, range and key check.

Every problem raises :class:`InputError` (a subclass of :class:`napari_xfusion.engine.InputError`)
whose message names the input (its file, or "LR layer"/"HR layer"/"truth layer" for arrays)
and says what was expected.

Normalisation (one rule, the same in the CLI and the GUI)
---------------------------------------------------------
``normalise="auto"``: float data already within [0, 1] is used as is; anything else (detector
counts, floats outside [0, 1]) gets percentile clip values (0.35th / 99.65th,
:func:`napari_xfusion.core.normalise.fit_normalisation`) fitted on the frames the run uses of
that stream:

- HR: the key rows (for a full-rate stack, only its rows at the key indices; at most
  :data:`LR_SAMPLE_FRAMES` of them, evenly spaced);
- LR: an evenly spaced sample of at most :data:`LR_SAMPLE_FRAMES` frames across the whole
  stream (first and last included), so memory does not grow with T;
- truth: used as is when it is float in [0, 1] (on the same kind of sample); otherwise the HR
  keys' normalisation when HR was normalised (so fused frames and truth share units), else
  its own clip values fitted like the LR's.

``"percentile"`` always fits clip values (same frames); ``"none"`` never does (float data is
used as it is). The "already in [0, 1]" test looks at the same frames as the fit.

Key frames
----------
- ``keys.indices``: one LR index per HR frame (a stack of key frames only), or rows of a
  full-rate HR stack (one frame per LR frame).
- ``keys.step`` / ``keys.first_last`` on a full-rate HR stack: its rows at those indices. On a
  stack of key frames only (fewer frames than LR): key ``i`` is at LR time ``i * step`` (or the
  2 frames at 0 and T-1); when the HR input has ``key_indices`` metadata it must agree.
- no rule: the HR input's ``key_indices`` metadata (file or layer), else an error.

Modules: :mod:`.prepared` (:class:`PreparedInputs`, :class:`InputError`), :mod:`.normalisation`
(the normalisation rule), :mod:`.keys` (the key rule, the separation), :mod:`.prepare`
(:func:`prepare_inputs`); every name is importable from here.
"""

from __future__ import annotations

from napari_xfusion.app.inputs.normalisation import (
    LR_SAMPLE_FRAMES,
    fit_stream,
    is_unit_float,
    sample_rows,
    truth_normalisation,
)
from napari_xfusion.app.inputs.prepare import prepare_inputs, source_path
from napari_xfusion.app.inputs.prepared import InputError, PreparedInputs, Simulated

__all__ = [
    "LR_SAMPLE_FRAMES",
    "InputError",
    "PreparedInputs",
    "Simulated",
    "fit_stream",
    "is_unit_float",
    "prepare_inputs",
    "sample_rows",
    "source_path",
    "truth_normalisation",
]
