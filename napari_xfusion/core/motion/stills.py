"""The natural stills and their fixed, disjoint training / validation split."""

from __future__ import annotations

import gzip
from functools import lru_cache

import numpy as np

TRAINING_STILLS: tuple[str, ...] = (
    "camera", "coins", "moon", "page", "text", "brick", "grass", "gravel", "clock", "cell",
    "rocket", "astronaut", "coffee", "chelsea", "cat", "hubble_deep_field",
    "immunohistochemistry", "retina",
)  # fmt: skip
"""Natural stills for training: every natural image bundled with scikit-image (the set the
shipped weights were trained on). ``cat`` and ``chelsea`` are the same photograph."""

VALIDATION_STILLS: tuple[str, ...] = (
    "motorcycle_left",  # skimage.data.stereo_motorcycle()[0]: 500x741 RGB, a real scene
    "motorcycle_right",  # [1]: the same scene from 1 stereo baseline away: never train on it
    "grace_hopper",  # matplotlib sample_data/grace_hopper.jpg: 600x512 RGB portrait
    "jacksboro_dem",  # matplotlib sample_data/jacksboro_fault_dem.npz, hill-shaded: 344x403
    "mri_s1045",  # matplotlib sample_data/s1045.ima.gz: 256x256 16-bit MRI slice
)
"""Natural stills never to be trained on: the real-motion validation set is made of these."""


def training_stills() -> tuple[str, ...]:
    """Names of the stills that training may use (see :func:`load_still`)."""
    return TRAINING_STILLS


def validation_stills() -> tuple[str, ...]:
    """Names of the stills reserved for validation (never trained on)."""
    return VALIDATION_STILLS


def _unit(img: np.ndarray) -> np.ndarray:
    """Grey float32 in [0, 1]: clip at the 0.35th / 99.65th percentiles, min-max scale."""
    img = np.asarray(img, dtype=np.float64)
    lo, hi = np.percentile(img, [0.35, 99.65])
    return np.clip((img - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)


def _grey(img: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2gray, rgba2rgb

    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = rgba2rgb(img)
    if img.ndim == 3:
        img = rgb2gray(img)
    return img


def _hillshade(elevation: np.ndarray, azimuth_deg: float = 315.0, altitude_deg: float = 45.0):
    """Lambertian shading of a height map lit from ``azimuth`` (its texture is the detail)."""
    dy, dx = np.gradient(np.asarray(elevation, dtype=np.float64))
    az, alt = np.deg2rad(azimuth_deg), np.deg2rad(altitude_deg)
    slope = np.arctan(np.hypot(dx, dy))
    aspect = np.arctan2(-dx, dy)
    return np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)


@lru_cache(maxsize=32)
def _load(name: str) -> np.ndarray:
    import skimage.data

    if name in TRAINING_STILLS:
        img = getattr(skimage.data, name)()
    elif name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        img = left if name == "motorcycle_left" else right
    else:
        from matplotlib import cbook

        if name == "grace_hopper":
            from skimage.io import imread

            img = imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        elif name == "jacksboro_dem":
            with np.load(cbook.get_sample_data("jacksboro_fault_dem.npz", asfileobj=False)) as z:
                img = _hillshade(z["elevation"])
        elif name == "mri_s1045":
            path = cbook.get_sample_data("s1045.ima.gz", asfileobj=False)
            with gzip.open(path) as f:
                img = np.frombuffer(f.read(), np.uint16).reshape(256, 256)
        else:
            known = ", ".join(TRAINING_STILLS + VALIDATION_STILLS)
            raise ValueError(f"unknown still {name!r}; choose from {known}")
    out = _unit(_grey(img))
    out.setflags(write=False)
    return out


def load_still(name: str) -> np.ndarray:
    """A still image by name, grey float32 in [0, 1] (read-only; copy to modify).

    Parameters
    ----------
    name : str
        One of :func:`training_stills` or :func:`validation_stills`.

    Returns
    -------
    numpy.ndarray, float32, shape (H, W)
        Clipped at its 0.35th / 99.65th percentiles and min-max scaled, as
        :mod:`napari_xfusion.core.normalise` does for detector data.
    """
    return _load(name)
