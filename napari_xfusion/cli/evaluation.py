"""``xfusion evaluate``: PSNR/AAD/SSIM of a fused export (either face) against the truth."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xfusion.cli._common import (
    CommandError,
    check_folder,
    epilog,
    formatter,
    make_folder,
    say,
)

if TYPE_CHECKING:
    from napari_xfusion.app.results import ResultTable

__all__ = ["add_parser", "evaluate", "run_evaluate"]


def evaluate(
    fused_path: str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
    csv_path: str | os.PathLike[str] | None = None,
) -> tuple[Path, dict[str, list[float]]]:
    """Per-frame PSNR/AAD/SSIM of a fused export (either face, any version) against the truth.

    :func:`napari_xfusion.app.export.read_export` says which LR frame each page is and which
    pages were computed (frames never run are not scored); detector-unit exports are mapped
    back with their stored normalisation. The truth is normalised by the input policy's rule
    (as is when float in [0, 1], else the export's HR clip values, else its own). Returns the
    CSV path and the metric columns.
    """
    _, _, path, columns = _evaluate(fused_path, truth_path, csv_path)
    return path, columns


def _evaluate(
    fused_path: str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
    csv_path: str | os.PathLike[str] | None = None,
) -> tuple[ResultTable, str, Path, dict[str, list[float]]]:
    from napari_xfusion.app.export import check_writes, read_export, writing
    from napari_xfusion.app.inputs import truth_normalisation
    from napari_xfusion.app.results import ResultTable
    from napari_xfusion.core.io import read_stack, write_text_atomic

    fused_path, truth_path = Path(fused_path), Path(truth_path)
    out = Path(csv_path) if csv_path else fused_path.with_name(f"{fused_path.stem}_metrics.csv")
    check_writes([out], {"fused stack": fused_path, "--truth input": truth_path})
    check_folder(out.parent, f"--csv {out}")
    fused, info = read_export(fused_path, role="fused stack")
    truth = read_stack(truth_path, check_finite=False, role="--truth")
    pages = info.computed_pages
    indices = info.pages[pages]
    if not pages.size:
        raise CommandError(f"fused stack {fused_path}: holds no computed frame")
    if not info.complete:
        say(
            f"xfusion evaluate: note: {fused_path} is an incomplete export (a stopped run); "
            f"scoring the {pages.size} frames it holds"
        )
    if fused.shape[1:] != truth.shape[1:]:
        raise CommandError(
            f"fused stack {fused_path} frames are {fused.shape[1]}x{fused.shape[2]} but "
            f"--truth {truth_path} frames are {truth.shape[1]}x{truth.shape[2]}"
        )
    if int(indices.max()) >= truth.shape[0]:
        raise CommandError(
            f"fused stack {fused_path} holds frame {int(indices.max())} but --truth "
            f"{truth_path} has only {truth.shape[0]} frames"
        )
    truth_norm = truth_normalisation(
        truth, indices, "auto", info.normalisation, f"--truth {truth_path}"
    )

    def truth_frame(t: int) -> np.ndarray:
        ref = np.asarray(truth[t])
        return truth_norm.apply(ref) if truth_norm is not None else ref.astype(np.float32)

    keys = info.key_indices if info.key_indices is not None else ()
    table = ResultTable(keys, truth_frame)
    method = info.method or fused_path.stem
    for page, t in zip(pages, indices, strict=False):
        table.add_frame(method, int(t), info.to_unit(fused[page]))
    make_folder(out.parent, "--csv")
    with writing(out):
        write_text_atomic(out, table.to_csv_text(method))
    return table, method, out, table.metric_columns(method)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        formatter_class=formatter,
        help="PSNR/AAD/SSIM of a fused stack",
        description="Compare a fused stack with the ground truth frame by frame; writes a CSV "
        "and prints mean/median PSNR, AAD and SSIM.",
        epilog=epilog("""
            xfusion evaluate fused.tif --truth data/truth.tif
            xfusion evaluate fused.tif --truth data/truth.tif --csv metrics.csv
        """),
    )
    p.add_argument("fused", type=Path, help="fused TIFF written by xfusion fuse")
    p.add_argument("--truth", required=True, type=Path, help="full-rate HR ground truth")
    p.add_argument("--csv", type=Path, help="per-frame CSV (default <fused>_metrics.csv)")
    p.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    table, _, csv_path, _ = _evaluate(args.fused, args.truth, args.csv)
    print(table.summary_text())
    print(f"per-frame metrics: {csv_path}")
    return 0
