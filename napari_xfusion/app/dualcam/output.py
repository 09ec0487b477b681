"""The aligned pair on disk: what ``xfusion fuse --lr DIR/lr.tif --hr DIR/hr.tif`` takes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.app.dualcam.align import AlignedPair
from napari_xfusion.app.dualcam.config import DualCameraError

__all__ = ["ALIGNED_FILES", "crop_truth", "write_aligned"]

ALIGNED_FILES = ("lr.tif", "hr.tif", "transform.json", "alignment.json", "alignment.txt")
"""The files :func:`write_aligned` writes."""


def _software() -> str:
    from napari_xfusion import __version__

    return f"napari-xfusion {__version__}"


def crop_truth(pair: AlignedPair, truth: Any, name: str = "truth") -> np.ndarray:
    """A stack on the LR camera's exact 4x grid (T, 4h, 4w) (e.g. the simulated ``truth.tif``)
    cropped like the aligned pair and mapped to its units with the LR's normalisation (as is
    when the LR was used as is): float32 (T, 4h', 4w'), comparable with fused frames."""
    report = pair.report
    n, (h, w) = report.n_lr_frames, report.lr_shape
    shape = tuple(getattr(truth, "shape", ()))
    if shape != (n, 4 * h, 4 * w):
        raise DualCameraError(
            f"{name}: shape {shape}, expected ({n}, {4 * h}, {4 * w}): the LR camera's "
            "frames on its exact 4x grid"
        )
    y0, y1, x0, x1 = report.lr_crop
    crop = np.asarray(truth[:, 4 * y0 : 4 * y1, 4 * x0 : 4 * x1], dtype=np.float32)
    if pair.lr_normalisation is not None:
        crop = pair.lr_normalisation.apply(crop)
    return np.ascontiguousarray(crop, dtype=np.float32)


def write_aligned(
    pair: AlignedPair,
    out_dir: str | os.PathLike[str],
    *,
    inputs: dict[str, Any] | None = None,
    truth: Any = None,
) -> dict[str, Path]:
    """Write ``lr.tif`` (LR cropped, float32 [0, 1]), ``hr.tif`` (the keys on the exact 4x
    grid, ``key_indices`` in its metadata), ``transform.json`` (reusable with ``--transform``),
    ``alignment.json`` (the report) and ``alignment.txt`` (its summary) into ``out_dir``.

    ``inputs`` (``{label: path}``) are refused as outputs (no input is ever overwritten).
    ``truth`` (T, 4h, 4w) on the LR camera's 4x grid: also ``truth.tif``, cropped and
    normalised like the LR (:func:`crop_truth`). Every file is written atomically. Returns the
    paths by role: ``lr``, ``hr``, ``transform``, ``alignment``, ``summary`` (, ``truth``).
    """
    from napari_xfusion.app.export import check_writes, writing
    from napari_xfusion.core.io import write_stack, write_text_atomic

    out = Path(out_dir)
    paths = dict(
        zip(
            ("lr", "hr", "transform", "alignment", "summary"),
            (out / n for n in ALIGNED_FILES),
            strict=True,
        )
    )
    if inputs:
        check_writes(paths.values(), {k: v for k, v in inputs.items() if v is not None})
    report = pair.report
    keys = [int(k) for k in pair.key_indices]
    pixel = None if not report.lr_pixel_um else float(report.lr_pixel_um)
    common = {
        "software": _software(),
        "aligned": {
            "by": "xfusion register",
            "lr_source": report.lr_source,
            "hr_source": report.hr_source,
            "lr_crop": list(report.lr_crop),
            "transform": "transform.json",
        },
        "frame_interval_s": report.lr_interval_s,
    }
    lr_meta = {**common, "pixel_size_um": pixel, "xfusion": {"role": "lr", "binning": 4}}
    if report.lr_normalisation is not None:
        lr_meta["normalisation"] = {"lr": report.lr_normalisation}
    hr_meta = {
        **common,
        "key_indices": keys,
        "key_times_frames": report.key_times_frames,
        "pixel_size_um": None if pixel is None else pixel / 4,
        "xfusion": {"role": "hr_keys", "key_indices": keys},
    }
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        write_stack(paths["lr"], pair.lr, lr_meta)
        write_stack(paths["hr"], pair.hr_keys, hr_meta)
        pair.transform.save(paths["transform"])
        write_text_atomic(paths["alignment"], json.dumps(report.to_dict(), indent=2) + "\n")
        write_text_atomic(paths["summary"], report.summary() + "\n")
        if truth is not None:
            paths["truth"] = write_stack(
                out / "truth.tif", crop_truth(pair, truth), {**common, "xfusion": {"role": "truth"}}
            )
    return paths
