"""One reconstruction engine for the GUI, the CLI and the benchmarks.

:func:`run` walks the requested LR times in time order and yields one :class:`FrameResult` per
(time, method) as soon as it is ready, so the GUI can update layers live and the CLI can write
frame by frame. Nothing is held beyond the current window: input frames are read (and
normalised) lazily from arrays or memory-mapped TIFFs through a small cache, so memory is
O(window), not O(T). Stop early by closing the generator (``gen.close()`` or leaving a ``for``
loop); every result yielded before stays valid.

Several methods run side by side: each frame's inputs are read once and shared; each method's
:meth:`~napari_xfusion.methods.base.Reconstructor.reconstruct_stream` is driven by its own
time-ordered feed of :class:`~napari_xfusion.methods.base.WindowInputs`, so network methods can
reuse per-frame features and batch targets.

Attention scores: for methods that report them (``edvr-stf``), ``backward``/``forward`` are the
raw scores of the HR key before / after t (indices 3 and 4 of
:attr:`Reconstruction.attention`). The normalised values divide by the score at the preceding
key's own time (:func:`napari_xfusion.core.attention.normalise_scores`); when that key frame is
not among the requested times it is reconstructed too (once, not yielded), so normalised values
are available live.
"""

from napari_xfusion.engine.building import DEVICES, build_methods, configure_torch_threads
from napari_xfusion.engine.inputs import InputError, KeyFrames, resolve_targets, split_targets
from napari_xfusion.engine.results import FrameResult, attention_table
from napari_xfusion.engine.runner import run

__all__ = [
    "DEVICES",
    "FrameResult",
    "InputError",
    "KeyFrames",
    "attention_table",
    "build_methods",
    "configure_torch_threads",
    "resolve_targets",
    "run",
    "split_targets",
]
