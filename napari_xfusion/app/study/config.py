"""A study's configuration (:mod:`napari_xfusion.app.study`): :class:`StudyConfig` (validation,
JSON round trip, presets), one cell of the sweeps (:class:`Setting`) and :class:`StudyError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STUDY_VERSION = 1
FIRST_LAST = "first-last"
"""Key step value meaning "HR keys at the first and the last frame only"."""


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
