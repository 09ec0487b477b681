"""``bicubic``: x4 bicubic up-sampling of the centre LR frame, the floor every method must beat."""

from __future__ import annotations

from napari_xfusion.core.resample import upscale_bicubic
from napari_xfusion.methods.base import SCALE, Reconstruction, Reconstructor, WindowInputs


class Bicubic(Reconstructor):
    """x4 bicubic interpolation (Keys kernel, a = -0.75, as PyTorch and OpenCV) of LR t."""

    name = "bicubic"
    uses_hr_keys = False

    def reconstruct(self, inputs: WindowInputs) -> Reconstruction:
        return Reconstruction(frame=upscale_bicubic(inputs.lr[1], SCALE))
