"""The paper's study as one run: sweeps of LR noise, HR key step and LR separation over every
method, on the same target frames, through the shared pipeline; resumable.

What is swept (defaults = the paper's figures)
----------------------------------------------
- **noise** (Fig. 5): target LR PSNR 20, 30, 40, 50, 60 dB and noise-free, at s = 1, k = 20;
- **keys** (Figs 6, S3, S4): HR key step 2, 10, 20 and first-and-last only, for s = 1, 2, 3,
  at :attr:`StudyConfig.key_lr_psnr` (default noise-free).

A setting (key rule, s, LR PSNR) that belongs to both sweeps (k = 20, s = 1, clean) is run
once. Each setting is one :class:`~napari_xfusion.app.config.RunConfig` with ``simulate=True``
(LR = 4x4 binning of the truth, seeded shot noise at the target PSNR) run by
:func:`~napari_xfusion.app.inputs.prepare_inputs` and :func:`~napari_xfusion.app.job.run_job`:
windows, normalisation and metrics are the pipeline's, nothing is re-implemented here.

Inputs
------
``truth``: a full-rate HR stack (any TIFF the reader takes), normalised once by the pipeline's
rule (:func:`~napari_xfusion.app.inputs.fit_stream`: used as is when float in [0, 1], else
percentile clip values on an evenly spaced sample), so every setting sees the same truth and,
at the same noise level, the same LR stream. ``None``: the built-in simulated sample,
:func:`napari_xfusion.core.sample.simulate_sequence` with ``sample_frames=101``,
``sample_shape=(400, 1024)``, ``sample_seed=20260`` (a held-out seed: training uses seeds
>= 1,000,000; the README's model table uses it too), ``sample_noise=False`` (no HR detector
noise in the truth, like the benchmarks). 101 frames put a key on the last frame for k = 2, 10
and 20.

Target frames
-------------
The same frames for every method *and every setting* (so settings compare on the same frames
and bicubic, which ignores the keys, is exactly flat across key steps): the candidates are the
frames that are not an HR key in any setting and lie between the first and the last key of
every setting; ``targets_per_setting`` of them are taken evenly spaced (first and last
candidate included; None = all). On the default sample they are odd frames 1..99.

Outputs (``out_dir``)
---------------------
``study.json`` (the :class:`StudyConfig`), ``runs/<setting>.json`` (each setting's
RunConfig), ``frames.csv`` (one row per method, setting and frame: :data:`COLUMNS`), and once
every setting is done the figures and ``summary.md`` (:mod:`napari_xfusion.app.study_plots`).
``frames.csv`` is rewritten atomically after every setting and when the run stops (Ctrl-C,
an error, a closed generator), so the rows done are kept; a rerun with the same configuration
skips them. A different configuration refuses to mix with old rows (the message names the
fields that differ); ``device`` may differ between runs.

From a GUI: :func:`iter_study` is a generator of :class:`StudyProgress` events (close it to
cancel; the rows done are saved); :func:`run_study` takes a ``cancel`` callable.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "COLUMNS",
    "FIRST_LAST",
    "STUDY_VERSION",
    "Setting",
    "StudyConfig",
    "StudyError",
    "StudyProgress",
    "StudyResult",
    "default_methods",
    "iter_study",
    "load_truth",
    "read_rows",
    "report_study",
    "run_study",
    "study_settings",
    "study_targets",
    "truth_frames",
    "describe_truth",
]

STUDY_VERSION = 1
FIRST_LAST = "first-last"
"""Key step value meaning "HR keys at the first and the last frame only"."""

COLUMNS = (
    "setting", "sweeps", "method", "key_step", "separation", "lr_psnr", "lr_psnr_achieved",
    "b0", "frame", "offset", "is_key", "psnr", "aad", "ssim", "seconds",
    "backward", "forward", "backward_norm", "forward_norm",
)  # fmt: skip
"""Columns of ``frames.csv``: ``offset`` = frame - preceding key; ``lr_psnr`` = the target
(blank: noise-free), ``lr_psnr_achieved`` = measured on the simulated LR; attention columns
blank for methods without scores."""

_INT_COLUMNS = {"separation", "frame", "offset", "is_key"}
_TEXT_COLUMNS = {"setting", "sweeps", "method", "key_step"}
_FLUSH_SECONDS = 60.0  # also rewrite frames.csv within a setting at most this often


class StudyError(ValueError):
    """A study that cannot run (bad configuration, an out folder of another study)."""


def _key_value(value: Any) -> int | str:
    if isinstance(value, str):
        if value.replace("_", "-").lower() in {FIRST_LAST, "fl", "firstlast", "first-and-last"}:
            return FIRST_LAST
        try:
            value = int(value)
        except ValueError:
            raise StudyError(
                f"key_steps: {value!r} is neither an integer >= 2 nor {FIRST_LAST!r}"
            ) from None
    if isinstance(value, bool) or int(value) != value or value < 2:
        raise StudyError(f"key_steps: expected integers >= 2 or {FIRST_LAST!r}, got {value!r}")
    return int(value)


def _noise_value(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.lower() in {"clean", "none", "inf"}):
        return None
    try:
        db = float(value)
    except (TypeError, ValueError):
        raise StudyError(f"noise levels: {value!r} is not a PSNR in dB nor 'clean'") from None
    if not 20.0 <= db <= 60.0:
        raise StudyError(f"noise levels: LR PSNR must be 20..60 dB or clean, got {db:g}")
    return db


@dataclass(frozen=True)
class Setting:
    """One cell of the sweeps: key rule, LR separation and LR noise."""

    key_step: int | str  # int >= 2 or FIRST_LAST
    separation: int
    lr_psnr: float | None  # target LR PSNR in dB; None: noise-free
    sweeps: tuple[str, ...] = ()  # "noise" and/or "keys"

    @property
    def id(self) -> str:
        """Stable name, e.g. ``k20-s1-psnr40`` or ``kfl-s2-clean``."""
        k = "fl" if self.key_step == FIRST_LAST else str(self.key_step)
        noise = "clean" if self.lr_psnr is None else f"psnr{self.lr_psnr:g}"
        return f"k{k}-s{self.separation}-{noise}"

    @property
    def noise_label(self) -> str:
        return "clean" if self.lr_psnr is None else f"{self.lr_psnr:g} dB"

    def run_config(self, study: StudyConfig, methods: Sequence[str]) -> Any:
        """This setting's :class:`~napari_xfusion.app.config.RunConfig` (simulated LR)."""
        from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig

        keys = (
            KeyRule(first_last=True) if self.key_step == FIRST_LAST else KeyRule(step=self.key_step)
        )
        return RunConfig(
            hr=study.truth,
            simulate=True,
            keys=keys,
            separation=self.separation,
            normalise=study.normalise,
            device=study.device,
            lr_psnr=self.lr_psnr,
            seed=study.noise_seed,
            methods=tuple(MethodChoice(m) for m in methods),
        )


@dataclass(frozen=True)
class StudyConfig:
    """A study: the truth, the sweeps, the methods and the target frames.

    Attributes
    ----------
    truth : str, optional
        Full-rate HR ground-truth stack (T, H, W), H and W multiples of 4; None = the built-in
        sample (``sample_frames``, ``sample_shape``, ``sample_seed``).
    sample_noise : bool
        The sample's own HR detector noise (default False, like the benchmarks: a noisy truth
        caps every method's PSNR at the noise no method can predict and hides differences).
    noise_levels : tuple of float or None
        Target LR PSNR (dB, 20..60) of the noise sweep; None = noise-free.
    noise_key_step, noise_separation
        Key step and s of the noise sweep (paper: 20 and 1).
    key_steps : tuple of int or "first-last"; separations : tuple of int
        The key-step sweep, run for each separation.
    key_lr_psnr : float, optional
        LR noise of the key-step sweep (None: noise-free).
    methods : tuple of str, optional
        Registered method names; None = :func:`default_methods` (resolved by :func:`run_study`
        and stored resolved in ``study.json``).
    targets_per_setting : int, optional
        Target frames (the same in every setting, see the module docstring); None = all.
    noise_seed : int
        Seed of the LR shot noise (the same draw for every method of a setting).
    device : str
        For network methods (``auto``, ``cpu``, ``cuda[:N]``, ``mps``); may change on resume.
    normalise : str
        The truth's normalisation mode (``auto``, ``percentile``, ``none``; see RunConfig).
    """

    version: int = STUDY_VERSION
    truth: str | None = None
    sample_frames: int = 101
    sample_shape: tuple[int, int] = (400, 1024)
    sample_seed: int = 20260
    sample_noise: bool = False
    noise_levels: tuple[float | None, ...] = (20.0, 30.0, 40.0, 50.0, 60.0, None)
    noise_key_step: int | str = 20
    noise_separation: int = 1
    key_steps: tuple[int | str, ...] = (2, 10, 20, FIRST_LAST)
    separations: tuple[int, ...] = (1, 2, 3)
    key_lr_psnr: float | None = None
    methods: tuple[str, ...] | None = None
    targets_per_setting: int | None = 20
    noise_seed: int = 0
    device: str = "auto"
    normalise: str = "auto"

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if self.version != STUDY_VERSION:
            raise StudyError(f"version: study configuration version {self.version!r}; "
                             f"this napari-xfusion reads version {STUDY_VERSION}")  # fmt: skip
        if self.truth is not None:
            set_("truth", os.fspath(self.truth))
        shape = tuple(int(v) for v in self.sample_shape)
        if len(shape) != 2 or any(v < 8 or v % 4 for v in shape):
            raise StudyError(
                f"sample_shape must be (H, W), multiples of 4 and >= 8, got {self.sample_shape!r}"
            )
        set_("sample_shape", shape)
        if int(self.sample_frames) < 3:
            raise StudyError(f"sample_frames must be >= 3, got {self.sample_frames!r}")
        set_("sample_frames", int(self.sample_frames))
        set_("sample_seed", int(self.sample_seed))
        set_("sample_noise", bool(self.sample_noise))
        set_("noise_levels", tuple(dict.fromkeys(_noise_value(v) for v in self.noise_levels)))
        set_("noise_key_step", _key_value(self.noise_key_step))
        set_("key_steps", tuple(dict.fromkeys(_key_value(v) for v in self.key_steps)))
        for name in ("noise_separation",):
            if int(getattr(self, name)) < 1:
                raise StudyError(f"{name} must be >= 1, got {getattr(self, name)!r}")
            set_(name, int(getattr(self, name)))
        seps = tuple(dict.fromkeys(int(s) for s in self.separations))
        if any(s < 1 for s in seps):
            raise StudyError(f"separations must be integers >= 1, got {list(self.separations)}")
        set_("separations", seps)
        set_("key_lr_psnr", _noise_value(self.key_lr_psnr))
        if not self.noise_levels and not (self.key_steps and self.separations):
            raise StudyError("nothing to run: give noise levels or key steps and separations")
        if self.methods is not None:
            from napari_xfusion.methods.registry import get_spec

            methods = tuple(dict.fromkeys(str(m) for m in self.methods))
            if not methods:
                raise StudyError("methods: give at least one method (or None for all)")
            for m in methods:
                try:
                    get_spec(m)
                except ValueError as exc:
                    raise StudyError(f"methods: {exc}") from None
            set_("methods", methods)
        if self.targets_per_setting is not None:
            if int(self.targets_per_setting) < 1:
                raise StudyError(
                    f"targets_per_setting must be >= 1 or None, got {self.targets_per_setting!r}"
                )
            set_("targets_per_setting", int(self.targets_per_setting))
        set_("noise_seed", int(self.noise_seed))
        from napari_xfusion.app.devices import check_device

        try:
            check_device(self.device)
        except ValueError as exc:
            raise StudyError(f"device: {exc}") from None
        if self.normalise not in ("auto", "percentile", "none"):
            raise StudyError(f"normalise must be auto, percentile or none, got {self.normalise!r}")

    @classmethod
    def quick(cls, **changes: Any) -> StudyConfig:
        """The ``--quick`` preset: a 41-frame 200x512 sample, noise 20/40 dB and clean, key
        steps 2, 20 and first-last at s = 1 and 2, 4 targets (a few minutes on 2 cores)."""
        base: dict[str, Any] = dict(
            sample_frames=41,
            sample_shape=(200, 512),
            noise_levels=(20.0, 40.0, None),
            key_steps=(2, 20, FIRST_LAST),
            separations=(1, 2),
            targets_per_setting=4,
        )
        base.update(changes)
        return cls(**base)

    def replace(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON types only; :meth:`from_dict` gives an equal object back."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("sample_shape", "noise_levels", "key_steps", "separations", "methods"):
            if d[name] is not None:
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyConfig:
        if not isinstance(data, Mapping):
            raise StudyError(f"a study configuration is a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise StudyError(
                f"study configuration: unknown key {unknown[0]!r}; "
                f"known: {', '.join(sorted(known))}"
            )
        values = dict(data)
        for name in ("sample_shape", "noise_levels", "key_steps", "separations", "methods"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        from napari_xfusion.core.io import write_text_atomic

        return write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StudyConfig:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as exc:  # JSONDecodeError and StudyError
            raise StudyError(f"{path}: {exc}") from None


def default_methods() -> tuple[str, ...]:
    """Every registered method whose dependencies (torch) and shipped weights are present."""
    import importlib.util

    from napari_xfusion.methods.registry import available_methods

    has_torch = importlib.util.find_spec("torch") is not None
    out = []
    for name, spec in available_methods().items():
        if spec.needs_torch and not has_torch:
            continue
        if spec.needs_weights and (
            spec.default_weights is None or not Path(spec.default_weights).is_file()
        ):
            continue
        out.append(name)
    return tuple(out)


def study_settings(config: StudyConfig) -> list[Setting]:
    """The settings in run order: the noise sweep, then the key-step sweep (s by s); a setting
    in both sweeps appears once with ``sweeps == ("noise", "keys")``."""
    cells: dict[tuple[Any, int, float | None], list[str]] = {}
    for p in config.noise_levels:
        cells.setdefault((config.noise_key_step, config.noise_separation, p), []).append("noise")
    for s in config.separations:
        for k in config.key_steps:
            cells.setdefault((k, s, config.key_lr_psnr), []).append("keys")
    return [Setting(k, s, p, tuple(dict.fromkeys(sw))) for (k, s, p), sw in cells.items()]


def _keys_of(setting: Setting, n_frames: int) -> np.ndarray:
    from napari_xfusion.core.windows import key_indices

    if setting.key_step == FIRST_LAST:
        return key_indices(n_frames, first_last=True)
    return key_indices(n_frames, int(setting.key_step))


def study_targets(config: StudyConfig, n_frames: int) -> np.ndarray:
    """The target frames of every setting (module docstring): int64, sorted.

    Raises
    ------
    StudyError
        When no frame is a non-key frame between keys in every setting (too short a stack).
    """
    settings = study_settings(config)
    ok = np.ones(n_frames, dtype=bool)
    for setting in settings:
        if setting.key_step != FIRST_LAST and n_frames <= int(setting.key_step):
            raise StudyError(
                f"the truth has {n_frames} frames: key step {setting.key_step} needs at least "
                f"{int(setting.key_step) + 1}"
            )
        keys = _keys_of(setting, n_frames)
        ok[keys] = False
        ok[: keys[0]] = False
        ok[keys[-1] + 1 :] = False
    candidates = np.flatnonzero(ok).astype(np.int64)
    if not candidates.size:
        raise StudyError(
            f"no frame of the {n_frames}-frame truth lies between keys without being a key in "
            "every setting; use a longer stack or fewer key steps"
        )
    n = config.targets_per_setting
    if n is None or n >= candidates.size:
        return candidates
    picks = np.unique(np.linspace(0, candidates.size - 1, n).round().astype(np.int64))
    return candidates[picks]


def describe_truth(config: StudyConfig) -> str:
    """The truth's path, or a description of the built-in sample."""
    if config.truth is not None:
        return config.truth
    return (
        f"built-in sample (simulate_sequence: {config.sample_frames} frames, "
        f"{config.sample_shape[0]}x{config.sample_shape[1]}, seed {config.sample_seed}, "
        f"HR noise {'on' if config.sample_noise else 'off'})"
    )


def truth_frames(config: StudyConfig) -> int:
    """Frames of the truth (the sample's, or the stack's, read from its header)."""
    if config.truth is None:
        return config.sample_frames
    from napari_xfusion.core.io import read_stack

    return int(read_stack(config.truth, role="--truth", check_finite=False).shape[0])


def load_truth(config: StudyConfig) -> tuple[np.ndarray, str]:
    """The truth as float32 (T, H, W) in [0, 1] and its label (path or sample description)."""
    from napari_xfusion.app.inputs import fit_stream, sample_rows

    if config.truth is None:
        from napari_xfusion.core.sample import simulate_sequence

        label = describe_truth(config)
        stack = simulate_sequence(
            config.sample_frames,
            config.sample_shape,
            seed=config.sample_seed,
            noise=config.sample_noise,
        )
        return np.asarray(stack, dtype=np.float32), label
    from napari_xfusion.core.io import read_stack

    stack = read_stack(config.truth, role="--truth")
    if stack.ndim != 3:
        raise StudyError(f"{config.truth}: expected a (T, H, W) stack, got shape {stack.shape}")
    norm = fit_stream(stack, sample_rows(int(stack.shape[0])), config.normalise, config.truth)
    out = np.empty(stack.shape, dtype=np.float32)
    for start in range(0, stack.shape[0], 32):  # block by block: the memmap is never copied whole
        block = np.asarray(stack[start : start + 32])
        out[start : start + 32] = norm.apply(block) if norm is not None else block
    return out, config.truth


# ---------------------------------------------------------------------------- rows / CSV


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return value


def _rows_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in COLUMNS})
    return buffer.getvalue()


def _parse(name: str, text: str) -> Any:
    if name in _TEXT_COLUMNS:
        return text
    if name in _INT_COLUMNS:
        return int(text)
    if name == "lr_psnr":
        return float(text) if text else None
    return float(text) if text else math.nan


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``frames.csv`` (typed: NaN for blank numbers, None for a clean ``lr_psnr``)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return []
        missing = [c for c in COLUMNS if c not in reader.fieldnames]
        if missing:
            raise StudyError(f"{path}: not a study frames.csv (no column {missing[0]!r})")
        out = []
        for line, raw in enumerate(reader, start=2):
            try:
                out.append({c: _parse(c, raw[c] or "") for c in COLUMNS})
            except ValueError as exc:
                raise StudyError(f"{path}: line {line}: {exc}") from None
    return out


def _row(setting: Setting, prepared: Any, fr: Any) -> dict[str, Any]:
    from napari_xfusion.core.attention import preceding_keys

    keys = prepared.keys.indices
    sim = prepared.simulated
    return {
        "setting": setting.id,
        "sweeps": "+".join(setting.sweeps),
        "method": fr.method,
        "key_step": str(setting.key_step),
        "separation": setting.separation,
        "lr_psnr": setting.lr_psnr,
        "lr_psnr_achieved": math.nan if sim is None or sim.lr_psnr is None else sim.lr_psnr,
        "b0": math.nan if sim is None or sim.b0 is None else float(sim.b0),
        "frame": fr.index,
        "offset": int(fr.index - preceding_keys([fr.index], keys)[0]),
        "is_key": bool(fr.is_key),
        "psnr": fr.psnr,
        "aad": fr.aad,
        "ssim": fr.ssim,
        "seconds": fr.seconds,
        "backward": fr.backward,
        "forward": fr.forward,
        "backward_norm": fr.backward_norm,
        "forward_norm": fr.forward_norm,
    }


# ---------------------------------------------------------------------------- running


@dataclass
class StudyProgress:
    """One event of :func:`iter_study`."""

    kind: str  # "start", "setting", "frame", "saved", "done"
    setting: Setting | None
    setting_index: int  # 0-based; n_settings when done
    n_settings: int
    done: int  # (method, frame) rows computed in this run so far
    total: int  # rows this run has to compute (those already in frames.csv excluded)
    row: dict[str, Any] | None = None
    message: str = ""


@dataclass
class StudyResult:
    """What :func:`run_study` made."""

    out_dir: Path
    config: StudyConfig
    rows: list[dict[str, Any]]
    computed: int  # rows computed by this call
    reused: int  # rows found in frames.csv
    complete: bool  # every setting done (figures and summary written)
    seconds: float
    files: list[Path] = field(default_factory=list)

    @property
    def frames_csv(self) -> Path:
        return self.out_dir / "frames.csv"

    @property
    def summary_md(self) -> Path:
        return self.out_dir / "summary.md"


def _check_out_dir(config: StudyConfig, out: Path) -> list[dict[str, Any]]:
    """Rows already done in ``out`` by the same study (refuses another study's folder)."""
    study_json, frames_csv = out / "study.json", out / "frames.csv"
    if not study_json.exists():
        if frames_csv.exists():
            raise StudyError(
                f"{frames_csv} exists but {study_json} does not: cannot tell which study made "
                "those rows; use another --out folder or delete frames.csv"
            )
        return []
    old = StudyConfig.load(study_json).to_dict()
    new = config.to_dict()
    differ = [k for k in new if k != "device" and old.get(k) != new[k]]
    if differ:
        what = "; ".join(f"{k}: {old.get(k)!r} there, {new[k]!r} now" for k in differ)
        raise StudyError(
            f"{out} holds another study ({what}); its rows would mix with this one's. Use "
            "another out folder, or delete it to start again"
        )
    return read_rows(frames_csv) if frames_csv.exists() else []


def _log_run(out: Path, started: tuple[float, Any], rows: int, device: str) -> None:
    """Append this call's wall time, rows and machine load to ``runs/log.jsonl`` (the summary
    quotes it: timings measured on a busy machine are slower than the machine can do)."""
    import platform

    entry = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started[0])),
        "seconds": round(time.time() - started[0], 1),
        "rows_computed": rows,
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_start": None if started[1] is None else [round(v, 2) for v in started[1]],
        "load_end": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    with (out / "runs" / "log.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def iter_study(config: StudyConfig, out_dir: str | os.PathLike[str]) -> Iterator[StudyProgress]:
    """Run the study as a generator of :class:`StudyProgress` events (one per frame and
    method, plus setting boundaries); closing it stops between frames and saves the rows done.

    The last event (``kind == "done"``) comes after the figures and ``summary.md`` are written.
    """
    from napari_xfusion.app.inputs import prepare_inputs
    from napari_xfusion.app.job import FrameEvent, run_job
    from napari_xfusion.core.io import write_text_atomic

    if config.methods is None:
        config = config.replace(methods=default_methods())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _check_out_dir(config, out)
    truth, label = load_truth(config)
    n_frames = int(truth.shape[0])
    targets = study_targets(config, n_frames)
    config.save(out / "study.json")  # after the truth is known good: a typo binds no folder
    settings = study_settings(config)
    methods = list(config.methods or ())
    have = {(r["setting"], r["method"], r["frame"]) for r in rows}
    todo = {
        s.id: [(m, int(t)) for m in methods for t in targets if (s.id, m, int(t)) not in have]
        for s in settings
    }
    total = sum(len(v) for v in todo.values())
    frames_csv = out / "frames.csv"
    order = {s.id: i for i, s in enumerate(settings)}
    rank = {m: i for i, m in enumerate(methods)}

    def save() -> None:
        rows.sort(key=lambda r: (order.get(r["setting"], 1 << 30), rank.get(r["method"], 1 << 30),
                                 r["frame"]))  # fmt: skip
        write_text_atomic(frames_csv, _rows_text(rows))

    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    cache: dict[str, Any] = {}
    done = 0
    started = (time.time(), os.getloadavg() if hasattr(os, "getloadavg") else None)
    yield StudyProgress("start", None, 0, len(settings), 0, total,
                        message=f"{label}; {len(settings)} settings x {len(methods)} methods x "
                        f"{len(targets)} frames; {len(rows)} rows already done")  # fmt: skip
    try:
        for i, setting in enumerate(settings):
            needed = todo[setting.id]
            rc = setting.run_config(config, methods)
            rc.save(runs / f"{setting.id}.json")
            yield StudyProgress("setting", setting, i, len(settings), done, total,
                                message=f"{setting.id}: {len(needed)} rows to compute")  # fmt: skip
            if not needed:
                continue
            wanted = set(needed)
            run_methods = [m for m in methods if any(n[0] == m for n in needed)]
            run_targets = sorted({t for _, t in needed})
            rc_run = rc.replace(methods=tuple(c for c in rc.methods if c.name in run_methods))
            prepared = prepare_inputs(rc_run, hr=truth, names={"hr": label})
            last_flush = time.monotonic()
            job = run_job(rc_run, prepared, method_cache=cache, targets=run_targets)
            try:
                for event in job:
                    if not isinstance(event, FrameEvent):
                        continue
                    key = (event.row.method, int(event.row.index))
                    if key not in wanted:
                        continue
                    row = _row(setting, prepared, event.row)
                    rows.append(row)
                    done += 1
                    yield StudyProgress("frame", setting, i, len(settings), done, total, row)
                    if time.monotonic() - last_flush > _FLUSH_SECONDS:
                        save()
                        last_flush = time.monotonic()
            finally:
                job.close()
            save()
            yield StudyProgress("saved", setting, i, len(settings), done, total,
                                message=f"{setting.id} done")  # fmt: skip
    finally:
        save()  # Ctrl-C, an error or a closed generator: keep the rows done
        _log_run(out, started, done, config.device)
    files = report_study(out, config, rows, targets=targets, truth_label=label)
    yield StudyProgress("done", None, len(settings), len(settings), done, total,
                        message=f"{len(files)} files written in {out}")  # fmt: skip


def report_study(
    out_dir: str | os.PathLike[str],
    config: StudyConfig | None = None,
    rows: list[dict[str, Any]] | None = None,
    *,
    targets: Sequence[int] | None = None,
    truth_label: str | None = None,
) -> list[Path]:
    """(Re)make the figures and ``summary.md`` of ``out_dir`` from its ``frames.csv``."""
    from napari_xfusion.app import study_plots

    out = Path(out_dir)
    if config is None:
        config = StudyConfig.load(out / "study.json")
    if rows is None:
        rows = read_rows(out / "frames.csv")
    if targets is None:
        targets = study_targets(config, truth_frames(config))
    if truth_label is None:
        truth_label = describe_truth(config)
    return study_plots.write_report(out, config, rows, targets=targets, truth_label=truth_label)


def run_study(
    config: StudyConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    cancel: Callable[[], bool] | None = None,
    on_event: Callable[[StudyProgress], None] | None = None,
) -> StudyResult:
    """Run (or resume) the study into ``out_dir``; see the module docstring.

    Parameters
    ----------
    progress : bool
        A tqdm bar on stderr.
    cancel : callable, optional
        Polled after every frame; True stops (rows done saved, ``complete=False``).
    on_event : callable, optional
        Called with every :class:`StudyProgress` (e.g. a GUI thread's signal).
    """
    from tqdm import tqdm

    tic = time.perf_counter()
    events = iter_study(config, out_dir)
    bar = None
    complete = False
    computed = total = 0
    message = ""
    try:
        for event in events:
            if on_event is not None:
                on_event(event)
            if event.kind == "start":
                total = event.total
                bar = tqdm(total=total, disable=not progress, unit="frame", desc="study")
                if progress:
                    bar.write(event.message)
            elif event.kind == "setting" and bar is not None:
                bar.set_postfix_str(event.setting.id if event.setting else "")
            elif event.kind == "frame" and bar is not None:
                bar.update(1)
            elif event.kind == "done":
                complete = True
                message = event.message
            computed = event.done
            if cancel is not None and cancel():
                break
    finally:
        events.close()
        if bar is not None:
            bar.close()
    out = Path(out_dir)
    resolved = StudyConfig.load(out / "study.json")
    rows = read_rows(out / "frames.csv") if (out / "frames.csv").exists() else []
    files = sorted(p for p in out.rglob("*") if p.is_file())
    if progress and message:
        print(message)
    return StudyResult(out, resolved, rows, computed, len(rows) - computed, complete,
                       time.perf_counter() - tic, files)  # fmt: skip
