"""The before/after score: leave-one-key-out on the held-out keys, through the registry.

The weights are scored as a fusion run would use them (``MethodChoice(method, options,
weights=path)`` in the run configuration) by :func:`napari_xfusion.app.validation.
leave_one_key_out`, the code of ``xfusion validate``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.app.config import MethodChoice, RunConfig
from napari_xfusion.app.finetune.split import FinetuneError
from napari_xfusion.app.finetune.types import LooScore

__all__ = ["score_weights"]


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _choice(config: RunConfig, method: str, weights: Path) -> MethodChoice:
    from napari_xfusion.core.io import sha256_file

    options = dict(config.method(method).options) if method in config.method_names else {}
    return MethodChoice(method, options, weights=str(weights), weights_sha256=sha256_file(weights))


def score_weights(
    config: RunConfig,
    prepared: Any,
    method: str,
    weights: Path,
    held_out: tuple[int, ...],
    device: str,
) -> LooScore:
    """Leave-one-key-out of ``method`` with ``weights`` on the ``held_out`` keys."""
    from napari_xfusion.app.validation import leave_one_key_out

    run = config.replace(methods=(_choice(config, method, weights),), device=device)
    result = leave_one_key_out(run, prepared, withheld=list(held_out), device=device)
    rows = [r for r in result.rows if r.method == method and int(r.key_index) in held_out]
    if not rows:
        raise FinetuneError(f"leave-one-key-out gave no score for the keys {list(held_out)}")
    return LooScore(
        psnr=float(np.nanmean([r.psnr for r in rows])),
        aad=float(np.nanmean([r.aad for r in rows])),
        ssim=float(np.nanmean([r.ssim for r in rows])),
        lr_psnr=_nanmean([r.lr_psnr for r in rows]),
        per_key={int(r.key_index): float(r.psnr) for r in rows},
    )
