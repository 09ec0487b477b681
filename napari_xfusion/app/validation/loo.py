"""Leave-one-key-out: real accuracy on the user's own experiment, without ground truth.

With HR keys every k frames, key i is a real HR frame that no reconstruction needs. Withhold
it: rebuild the keys without it (keys i-1 and i+1 now frame LR time ``t_i``, a gap of 2k),
reconstruct ``t_i`` with every method of the run through the shared pipeline
(:func:`napari_xfusion.app.job.run_job`, the same code as ``xfusion fuse`` and the GUI), and
score the reconstruction against the real key (PSNR/AAD/SSIM on [0, 1] in the HR keys'
normalisation, :mod:`napari_xfusion.core.metrics`). The withheld key is not among the keys
the engine sees: it cannot leak into its own score.

What it measures: accuracy in the middle of a 2k gap, k frames from both keys - harder than
any frame of the run itself (at most k/2 from the nearer key). Read it as a pessimistic
accuracy and, above all, as a ranking of the methods on this data
(``benchmarks/validate_vs_truth.py`` measures how well it ranks them against the truth).

Edge keys: by the window rule (:func:`napari_xfusion.core.windows.window`) a time before the
first key or at the last key uses the two nearest keys, on one side. With ``edges=True`` the
first and last key are scored that way (extrapolation from keys k and 2k away); those rows
have ``one_sided=True`` and are kept apart in :meth:`ValidationResult.summary`. Default: only
interior keys.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.app.config import RunConfig
from napari_xfusion.app.inputs import InputError, PreparedInputs
from napari_xfusion.app.results import METRICS, format_table, rows_to_csv_text
from napari_xfusion.app.validation.consistency import LrChecker

__all__ = [
    "LooProgress",
    "LooRow",
    "ValidationResult",
    "iter_leave_one_key_out",
    "keys_without",
    "leave_one_key_out",
    "withheld_keys",
]

_NAN = math.nan


@dataclass(frozen=True)
class LooRow:
    """One method's reconstruction of one withheld key.

    Attributes
    ----------
    method : str
    key_index : int
        LR frame index (time) of the withheld key.
    gap_frames : int
        ``key_after - key_before`` of the keys that framed it (2k for an interior key of a
        regular key step k).
    psnr, aad, ssim : float
        Against the real key, [0, 1] in the HR keys' normalisation (PSNR NaN if identical).
    lr_psnr, lr_flagged_fraction : float
        LR consistency of the reconstruction (:func:`lr_consistency`), NaN when not checked.
    one_sided : bool
        Both framing keys on one side (an edge key, ``edges=True``).
    seconds : float
        Wall time of the reconstruction.
    """

    method: str
    key_index: int
    gap_frames: int
    psnr: float
    aad: float
    ssim: float
    lr_psnr: float = _NAN
    lr_flagged_fraction: float = _NAN
    one_sided: bool = False
    seconds: float = _NAN


LOO_COLUMNS = tuple(f.name for f in dataclasses.fields(LooRow))

_SUMMARY_TEXT = (
    ("method", "method"),
    ("keys_scored", "keys"),
    ("psnr_median", "PSNR median"),
    ("psnr_mean", "PSNR mean"),
    ("aad_median", "AAD median"),
    ("ssim_median", "SSIM median"),
    ("lr_flagged_keys", "LR-flagged"),
)


@dataclass
class ValidationResult:
    """Rows of a leave-one-key-out validation, with summary, CSV and plot.

    Attributes
    ----------
    rows : list of LooRow
        In (key, method) order.
    methods : list of str
    key_indices : numpy.ndarray
        All the run's keys (LR frame indices).
    withheld : list of int
        The keys withheld (each once).
    complete : bool
        False when cancelled before every key was done.
    notes : list of str
        What was decided (edge keys, units map, noise), for the user.
    """

    rows: list[LooRow] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    key_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    withheld: list[int] = field(default_factory=list)
    complete: bool = True
    notes: list[str] = field(default_factory=list)

    def rows_of(self, method: str) -> list[LooRow]:
        return [r for r in self.rows if r.method == method]

    def summary(self) -> list[dict[str, Any]]:
        """Per method: ``method, keys_scored, {psnr,aad,ssim}_{median,mean}`` over the interior
        keys, ``lr_psnr_median``, ``lr_flagged_keys`` (LR consistency flagged), and when edge
        keys were scored ``edge_keys, edge_psnr_mean``. NaN where undefined."""
        from napari_xfusion.app.validation.consistency import FLAG_FRACTION

        out = []
        for method in self.methods:
            rows = self.rows_of(method)
            inner = [r for r in rows if not r.one_sided]
            edge = [r for r in rows if r.one_sided]
            entry: dict[str, Any] = {"method": method, "keys_scored": len(inner)}
            for m in METRICS:
                v = _finite([getattr(r, m) for r in inner])
                entry[f"{m}_median"] = float(np.median(v)) if v.size else _NAN
                entry[f"{m}_mean"] = float(v.mean()) if v.size else _NAN
            lr = _finite([r.lr_psnr for r in inner])
            entry["lr_psnr_median"] = float(np.median(lr)) if lr.size else _NAN
            entry["lr_flagged_keys"] = sum(r.lr_flagged_fraction > FLAG_FRACTION for r in inner)
            if any(r.one_sided for r in self.rows):
                v = _finite([r.psnr for r in edge])
                entry["edge_keys"] = len(edge)
                entry["edge_psnr_mean"] = float(v.mean()) if v.size else _NAN
            out.append(entry)
        return out

    def to_csv_text(self) -> str:
        """One line per row (:data:`LOO_COLUMNS`), NaN as empty cells."""
        return rows_to_csv_text([dataclasses.asdict(r) for r in self.rows])

    def summary_csv_text(self) -> str:
        return rows_to_csv_text(self.summary())

    def summary_text(self) -> str:
        """The summary as a printed table."""
        return format_table(self.summary(), _SUMMARY_TEXT)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """PNG: per-key PSNR of each method (left) and a box plot per method (right).
        Matplotlib's Agg canvas only (no pyplot): headless and safe in a worker thread; the
        file is written atomically."""
        from napari_xfusion.app.validation.plots import plot_loo

        return plot_loo(self, Path(path))

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``loo.csv``, ``loo_summary.csv`` and ``loo.png`` into ``out_dir`` (atomic)."""
        from napari_xfusion.core.io import write_text_atomic

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"loo": out / "loo.csv", "summary": out / "loo_summary.csv",
                 "plot": out / "loo.png"}  # fmt: skip
        write_text_atomic(paths["loo"], self.to_csv_text())
        write_text_atomic(paths["summary"], self.summary_csv_text())
        self.plot(paths["plot"])
        return paths


def _finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return a[np.isfinite(a)]


# ----------------------------------------------------------------------------- keys


class _KeyView:
    """Lazy (K', H, W) stack of some keys of a KeyFrames, already in [0, 1] (float32)."""

    def __init__(self, keys: Any, indices: Sequence[int]) -> None:
        self._keys, self._indices = keys, [int(t) for t in indices]
        self.shape = (len(self._indices), *keys.frame_shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __getitem__(self, row: int) -> np.ndarray:
        return self._keys[self._indices[int(row)]]


def keys_without(keys: Any, t: int) -> Any:
    """``keys`` (an :class:`~napari_xfusion.engine.KeyFrames`) without the key at LR time ``t``.

    Frames are read lazily from ``keys`` (already normalised: the result has no
    normalisation of its own); ``t`` is not among its indices, so no window can use it.
    """
    from napari_xfusion.engine import KeyFrames

    indices = [int(k) for k in keys.indices]
    if int(t) not in indices:
        raise InputError(f"LR frame {t} is not an HR key; keys are at {_short(indices)}")
    kept = [k for k in indices if k != int(t)]
    if len(kept) < 2:
        raise InputError(
            f"withholding key {t} leaves {len(kept)} key(s); the keys around it need 2"
        )
    rule = {"key_indices": kept, "source": f"leave-one-key-out: key {int(t)} withheld"}
    return KeyFrames(_KeyView(keys, kept), kept, None, rule=rule)


def withheld_keys(
    key_indices: Sequence[int], withheld: Sequence[int] | None = None, *, edges: bool = False
) -> list[int]:
    """The keys (LR frame indices) to withhold: ``withheld`` (checked), else every interior
    key (plus the first and last with ``edges``). :class:`InputError` when fewer than 3 keys
    exist (nothing to withhold) or a ``withheld`` frame is not a key."""
    keys = [int(k) for k in key_indices]
    if len(keys) < 3:
        raise InputError(
            f"leave-one-key-out needs at least 3 HR keys (one withheld, two around it); the "
            f"HR stack has {len(keys)} ({_short(keys)})"
        )
    if withheld is None:
        return keys if edges else keys[1:-1]
    out = []
    for t in withheld:
        if int(t) != t or int(t) not in keys:
            raise InputError(
                f"cannot withhold LR frame {t}: it is not an HR key; keys are at {_short(keys)}"
            )
        if int(t) not in out:
            out.append(int(t))
    return sorted(out)


def _short(keys: Sequence[int]) -> str:
    keys = [int(k) for k in keys]
    if len(keys) <= 6:
        return ", ".join(map(str, keys))
    return f"{keys[0]}, {keys[1]}, {keys[2]} .. {keys[-1]} ({len(keys)} keys)"


# ----------------------------------------------------------------------------- the loop


@dataclass
class LooProgress:
    """One row done (``row``), or the start (``row`` None); ``done`` of ``total`` rows."""

    row: LooRow | None
    done: int
    total: int
    result: ValidationResult
    frame: np.ndarray | None = None  # the reconstruction of the withheld key (HR [0, 1])


def _is_cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def iter_leave_one_key_out(
    config: RunConfig,
    prepared: PreparedInputs,
    *,
    method_cache: MutableMapping[str, Any] | None = None,
    withheld: Sequence[int] | None = None,
    edges: bool = False,
    device: str | None = None,
    checker: LrChecker | None | bool = None,
) -> Iterator[LooProgress]:
    """:func:`leave_one_key_out` as a generator: a start event, then one per row (close it
    to cancel between frames; the result so far is in every event)."""
    from napari_xfusion.app.job import build_methods, run_job
    from napari_xfusion.core.metrics import frame_metrics
    from napari_xfusion.core.windows import window

    keys = prepared.keys
    indices = [int(k) for k in keys.indices]
    targets = withheld_keys(indices, withheld, edges=edges)
    methods = build_methods(config, method_cache, device=device)
    names = [getattr(m, "name", str(m)) for m in methods]
    result = ValidationResult(
        methods=names, key_indices=np.asarray(indices, np.int64), withheld=list(targets),
        complete=False,
    )  # fmt: skip
    if checker is None or checker is True:
        checker = LrChecker.from_prepared(prepared)
    if checker:
        d = checker.describe()
        result.notes.append(
            f"LR consistency: LR mapped to the HR keys' units by {d['mapping']} "
            f"(gain {d['gain']:.4g}, offset {d['offset']:.4g}); LR noise sigma "
            f"{d['lr_noise_sigma']:.4g} (estimated from the LR)"
        )
    if edges and withheld is None:
        result.notes.append("first and last key scored one-sided (two keys on one side)")
    total = len(targets) * len(methods)
    yield LooProgress(None, 0, total, result)
    done = 0
    for t in targets:
        subset = keys_without(keys, t)
        w = window(t, prepared.n_frames, prepared.separation, subset.indices)
        one_sided = not (w.key_before < t < w.key_after)
        trial = dataclasses.replace(
            prepared, keys=subset, targets=np.array([t], np.int64), truth=None,
            truth_normalisation=None,
        )  # fmt: skip
        truth = keys[t]  # the real key, never given to the run
        job = run_job(config, trial, methods=methods, device=device)
        try:
            next(job)  # JobStarted
            tic = time.perf_counter()
            for event in job:
                frame = np.asarray(event.result.frame, dtype=np.float32)
                scores = frame_metrics(frame, truth)
                lr_psnr = lr_flag = _NAN
                if checker:
                    c = checker.check(frame, t)
                    lr_psnr, lr_flag = c.psnr, c.flagged_fraction
                row = LooRow(
                    method=event.result.method,
                    key_index=t,
                    gap_frames=int(w.key_after - w.key_before),
                    psnr=scores["psnr"] if math.isfinite(scores["psnr"]) else _NAN,
                    aad=scores["aad"],
                    ssim=scores["ssim"],
                    lr_psnr=lr_psnr,
                    lr_flagged_fraction=lr_flag,
                    one_sided=one_sided,
                    seconds=time.perf_counter() - tic,
                )
                tic = time.perf_counter()
                result.rows.append(row)
                done += 1
                yield LooProgress(row, done, total, result, frame)
        finally:
            job.close()
    result.complete = True


def leave_one_key_out(
    config: RunConfig,
    prepared: PreparedInputs,
    *,
    method_cache: MutableMapping[str, Any] | None = None,
    withheld: Sequence[int] | None = None,
    edges: bool = False,
    device: str | None = None,
    cancel: Any = None,
    on_row: Callable[[LooRow, int, int], None] | None = None,
    checker: LrChecker | None | bool = None,
) -> ValidationResult:
    """Leave-one-key-out validation of every method of ``config`` on ``prepared``.

    Parameters
    ----------
    config : RunConfig
        Its methods (with options and weights) are validated; its frame window is ignored
        (keys anywhere in the stream are withheld).
    prepared : PreparedInputs
        From :func:`napari_xfusion.app.inputs.prepare_inputs`; needs >= 3 keys.
    method_cache : mutable mapping, optional
        Built methods reused across calls (:func:`napari_xfusion.app.job.build_methods`):
        networks load once.
    withheld : sequence of int, optional
        LR frame indices of the keys to withhold (default: every interior key).
    edges : bool
        Also withhold the first and last key (scored one-sided, see the module docstring).
    device : str, optional
        Overrides ``config.device``.
    cancel : threading.Event or callable, optional
        Checked between frames; when set the result holds the rows done (``complete``
        False).
    on_row : callable, optional
        ``on_row(row, done, total)`` after each row (progress).
    checker : LrChecker, optional
        LR consistency of each reconstruction (default built from ``prepared``; False: skip).

    Returns
    -------
    ValidationResult

    Raises
    ------
    InputError
        Fewer than 3 keys, a ``withheld`` frame that is not a key, a bad method or device.
    """
    events = iter_leave_one_key_out(
        config, prepared, method_cache=method_cache, withheld=withheld, edges=edges,
        device=device, checker=checker,
    )  # fmt: skip
    result = None
    try:
        for event in events:
            result = event.result
            if event.row is not None and on_row is not None:
                on_row(event.row, event.done, event.total)
            if _is_cancelled(cancel):
                break
    finally:
        events.close()
    assert result is not None
    return result
