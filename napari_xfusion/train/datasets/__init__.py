"""Training data: one window sampler over three kinds of frame sources.

Every training item is built the same way (the paper's recipe), whatever the frames come from:

1. a frame source (a simulated x-ray sequence, a stack from disk, or a natural texture in
   motion) is drawn from a weighted mixture;
2. LR separation ``s`` uniform in ``separations`` (default {1, 2, 3}); key offsets ``a, b``
   uniform integers in ``key_offsets`` (default [1, 20]); target ``t`` uniform among the times
   at which the HR keys ``t - s*a`` and ``t + s*b`` both exist;
3. :func:`napari_xfusion.core.windows.window` turns ``(t, s, keys)`` into the LR indices and
   the bracketing keys, exactly as at inference;
4. an HR crop (on the 4-pixel LR grid) of the frames at those times, the same random flips and
   90-degree rotation for all of them, the LR frames = 4x4 binning of the HR crops, and Poisson
   shot noise on the LR only with ``log10(b0)`` uniform in ``log10_b0``.

For ``edvr-stf-flow`` (:mod:`napari_xfusion.nn.edvr_flow`) the sampler also computes the flow
inputs per item (``flow=FlowSampling(...)``): every frame from the key before to the key after
is read on a *context* box around the crop (the flow needs more field of view than the 64 px
crop), binned and given the same shot noise, the ``flow`` method's fuser runs on it exactly as
at inference (chained flows through every LR frame between the keys), and the flow frame, the
warped keys and their confidences are cropped with the target. Measured: ~0.1-0.4 s per item
(crop 64, context 128, 2-core shared CPU), about a quarter of a small model's training step;
precomputing per sequence would tie the crops to a few windows.

Sources implement :class:`FrameSource`: ``n_frames``, ``shape`` and ``read(indices, box)``.
Reading only the frames and the crop a sample needs lets the natural textures render just those
frames and lets stacks on disk stay memory-mapped.

Randomness: every stream is a :class:`numpy.random.Generator` seeded from
``(seed, rank, worker, stream)``, so a run is reproducible and DDP ranks / loader workers draw
different samples.

Layout: :mod:`.sources` (frame sources, natural textures in motion), :mod:`.pools`
(simulated, real-motion, stack-folder and texture pools), :mod:`.sampler` (window sampler,
flow inputs, augmentation, the ``IterableDataset``); every name is re-exported here.
"""

from napari_xfusion.core.degrade import SCALE
from napari_xfusion.train.datasets.pools import (
    RealMotionPool,
    SimulatedPool,
    SourcePool,
    StackFolder,
    TexturePool,
)
from napari_xfusion.train.datasets.sampler import (
    FlowSampling,
    Sample,
    TrainingWindows,
    WindowSampler,
    flip_rotate,
)
from napari_xfusion.train.datasets.sources import (
    TRAINING_SEED_MIN,
    ArraySource,
    FrameSource,
    MovingTexture,
    bundled_textures,
)

__all__ = [
    "SCALE",
    "TRAINING_SEED_MIN",
    "FrameSource",
    "ArraySource",
    "FlowSampling",
    "RealMotionPool",
    "MovingTexture",
    "SourcePool",
    "SimulatedPool",
    "StackFolder",
    "TexturePool",
    "WindowSampler",
    "Sample",
    "TrainingWindows",
    "bundled_textures",
    "flip_rotate",
]
