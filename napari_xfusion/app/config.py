"""The run configuration: one frozen, validated, versioned description of a fusion run.

:class:`RunConfig` is what both faces map to (CLI arguments, GUI widgets), what the GUI
remembers between sessions, and what is saved next to every export (``<stem>.config.json``)
and inside its TIFF metadata. It holds only JSON types, so ``RunConfig.from_dict(c.to_dict())
== c`` always.

Conventions
-----------
- ``frames`` is half-open ``[start, stop)`` in LR frame indices, like a Python slice and the
  CLI's ``--frames 0:100``. The GUI maps its inclusive spin boxes ``first..last`` to
  ``(first, last + 1)``.
- Key rule (:class:`KeyRule`): exactly one of ``step``, ``first_last``, ``indices``, or none of
  them: "the HR file's ``key_indices`` metadata".
- Method options are checked and coerced against the method's declaration in
  :mod:`napari_xfusion.methods.registry` (``"4"`` -> ``4`` for an integer option).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_VERSION", "ConfigError", "FrozenOptions", "KeyRule", "MethodChoice", "RunConfig"]

CONFIG_VERSION = 1
"""Version written by :meth:`RunConfig.to_dict`; :meth:`RunConfig.from_dict` refuses others."""

NORMALISE_MODES = ("auto", "percentile", "none")
UNITS = ("float", "detector")
MIN_LR_PSNR_DB, MAX_LR_PSNR_DB = 20.0, 60.0  # as core.degrade's solver accepts


class ConfigError(ValueError):
    """An invalid run configuration; the message names the field and what is expected."""


class FrozenOptions(Mapping[str, Any]):
    """An immutable, hashable, key-sorted mapping of method options (JSON values only)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | Sequence[tuple[str, Any]] = ()) -> None:
        pairs = dict(items.items() if isinstance(items, Mapping) else items)
        self._items: tuple[tuple[str, Any], ...] = tuple(sorted(pairs.items()))

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return f"FrozenOptions({dict(self._items)!r})"


@dataclass(frozen=True)
class KeyRule:
    """Where the HR key frames are in LR time.

    Attributes
    ----------
    step : int, optional
        A key every ``step``-th LR frame (>= 2): rows ``0, step, 2*step, ...`` of a full-rate
        HR stack, or, for a stack of key frames only, key ``i`` at LR time ``i * step``.
    first_last : bool
        Only the first and the last LR frame have an HR key.
    indices : tuple of int, optional
        The LR time index of each HR frame (real dual-camera data), strictly increasing.

    All unset: the HR file's (or layer's) ``key_indices`` metadata.
    """

    step: int | None = None
    first_last: bool = False
    indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        given = [self.step is not None, bool(self.first_last), self.indices is not None]
        if sum(given) > 1:
            raise ConfigError(
                "keys: give only one of step, first_last and indices, got "
                f"step={self.step!r}, first_last={self.first_last!r}, indices={self.indices!r}"
            )
        if self.step is not None:
            if isinstance(self.step, bool) or int(self.step) != self.step or self.step < 2:
                raise ConfigError(f"keys.step must be an integer >= 2, got {self.step!r}")
            object.__setattr__(self, "step", int(self.step))
        if self.indices is not None:
            try:
                indices = tuple(int(i) for i in self.indices)
            except (TypeError, ValueError):
                raise ConfigError(f"keys.indices must be integers, got {self.indices!r}") from None
            if len(indices) < 2 or any(
                b <= a for a, b in zip(indices[:-1], indices[1:], strict=True)
            ):
                raise ConfigError(
                    "keys.indices must be at least 2 strictly increasing LR frame indices, "
                    f"got {list(indices)}"
                )
            if indices[0] < 0:
                raise ConfigError(f"keys.indices: index {indices[0]} is negative")
            object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "first_last", bool(self.first_last))

    @property
    def from_metadata(self) -> bool:
        """True when no rule is given: the keys come from the HR input's metadata."""
        return self.step is None and not self.first_last and self.indices is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "first_last": self.first_last,
            "indices": None if self.indices is None else list(self.indices),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyRule:
        _refuse_unknown(data, {"step", "first_last", "indices"}, "keys")
        indices = data.get("indices")
        return cls(
            step=data.get("step"),
            first_last=bool(data.get("first_last", False)),
            indices=None if indices is None else tuple(indices),
        )


@dataclass(frozen=True)
class MethodChoice:
    """One method of a run with its options.

    Attributes
    ----------
    name : str
        A method of :func:`napari_xfusion.methods.registry.available_methods`.
    options : mapping
        Constructor options (validated and coerced by the method's declaration); never
        ``weights`` (see below). ``device`` here overrides :attr:`RunConfig.device`.
    weights : str, optional
        Checkpoint path for a method that needs weights; None = its shipped weights.
    weights_sha256 : str, optional
        The checkpoint's SHA-256 (hex) as recorded when the run was set up (provenance).
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=FrozenOptions)
    weights: str | None = None
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        from napari_xfusion.methods.registry import coerce_options, get_spec

        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(
                f"methods: a method name must be a non-empty string, got {self.name!r}"
            )
        try:
            spec = get_spec(self.name)
        except ValueError as exc:
            raise ConfigError(f"methods: {exc}") from None
        options = dict(self.options or {})
        if "weights" in options:
            raise ConfigError(
                f"methods: {self.name}: give weights as MethodChoice.weights, not as an option"
            )
        try:
            coerced = coerce_options(spec, options)
        except ValueError as exc:
            raise ConfigError(f"methods: {exc}") from None
        object.__setattr__(self, "options", FrozenOptions(coerced))
        if self.weights is not None:
            if not spec.needs_weights:
                raise ConfigError(
                    f"methods: {self.name} uses no network weights, got {self.weights!r}"
                )
            object.__setattr__(self, "weights", os.fspath(self.weights))

    def constructor_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~napari_xfusion.methods.registry.get_reconstructor`."""
        out = dict(self.options)
        if self.weights is not None:
            out["weights"] = self.weights
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "options": dict(self.options),
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> MethodChoice:
        if isinstance(data, str):
            return cls(data)
        _refuse_unknown(data, {"name", "options", "weights", "weights_sha256"}, "methods[]")
        return cls(
            name=data.get("name", ""),
            options=data.get("options") or {},
            weights=data.get("weights"),
            weights_sha256=data.get("weights_sha256"),
        )


def _refuse_unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}"
            + (f" (and {unknown[1:]})" if unknown[1:] else "")
            + f"; known keys: {', '.join(sorted(known))}"
        )


def _default_methods() -> tuple[MethodChoice, ...]:
    return (MethodChoice("bicubic"),)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a fusion run (inputs, key rule, method choices, units).

    Attributes
    ----------
    version : int
        Schema version of this object (:data:`CONFIG_VERSION`).
    lr, hr, truth : str, optional
        Paths of the LR stream ``(T, h, w)``, the HR frames (key frames only, or a full-rate
        ``(T, 4h, 4w)`` stack) and the full-rate HR ground truth. The GUI fills in its layers'
        source paths, or None for layers without a file.
    simulate : bool
        Make the LR stream from a full-rate HR stack by 4x4 binning (plus shot noise when
        ``lr_psnr`` is set); ``lr`` is then ignored and the HR stack is the truth.
    keys : KeyRule
        Where the HR keys are (see :class:`KeyRule`).
    separation : int, optional
        LR frame separation s >= 1 (LR inputs t-s, t, t+s); None = the LR metadata's, else 1.
    frames : (int, int), optional
        LR frames to reconstruct, half-open ``[start, stop)``; None = all.
    normalise : str
        ``"auto"`` (float data already in [0, 1] is used as is, anything else is percentile
        clipped), ``"percentile"`` (always clip at the 0.35/99.65 percentiles) or ``"none"``.
    units : str
        Export units: ``"float"`` (float32 in [0, 1]) or ``"detector"`` (the HR detector's
        values and dtype, through the HR normalisation).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` for network methods.
    lr_psnr : float, optional
        Simulation only: target PSNR (dB, 20..60) of the simulated LR shot noise; None = clean.
    seed : int
        Seed of the simulated noise.
    methods : tuple of MethodChoice
        Methods to run, in display order (names unique).
    """

    version: int = CONFIG_VERSION
    lr: str | None = None
    hr: str | None = None
    truth: str | None = None
    simulate: bool = False
    keys: KeyRule = field(default_factory=KeyRule)
    separation: int | None = None
    frames: tuple[int, int] | None = None
    normalise: str = "auto"
    units: str = "float"
    device: str = "auto"
    lr_psnr: float | None = None
    seed: int = 0
    methods: tuple[MethodChoice, ...] = field(default_factory=_default_methods)

    def __post_init__(self) -> None:
        from napari_xfusion.app.devices import check_device

        if self.version != CONFIG_VERSION:
            raise ConfigError(
                f"version: this is configuration version {self.version!r}; this napari-xfusion "
                f"reads version {CONFIG_VERSION}"
            )
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name in ("lr", "hr", "truth"):
            value = getattr(self, name)
            if value is not None:
                set_(name, os.fspath(value))
        set_("simulate", bool(self.simulate))
        if isinstance(self.keys, Mapping):
            set_("keys", KeyRule.from_dict(self.keys))
        if self.separation is not None:
            if (
                isinstance(self.separation, bool)
                or int(self.separation) != self.separation
                or self.separation < 1
            ):
                raise ConfigError(
                    f"separation must be an integer >= 1 or None, got {self.separation!r}"
                )
            set_("separation", int(self.separation))
        if self.frames is not None:
            try:
                start, stop = (int(v) for v in self.frames)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"frames must be (start, stop) LR indices, stop exclusive; got {self.frames!r}"
                ) from None
            if start < 0 or stop <= start:
                raise ConfigError(
                    f"frames must satisfy 0 <= start < stop (stop exclusive), got {start}:{stop}"
                )
            set_("frames", (start, stop))
        if self.normalise not in NORMALISE_MODES:
            raise ConfigError(
                f"normalise must be one of {', '.join(NORMALISE_MODES)}, got {self.normalise!r}"
            )
        if self.units not in UNITS:
            raise ConfigError(f"units must be float or detector, got {self.units!r}")
        try:
            check_device(self.device)
        except ValueError as exc:
            raise ConfigError(f"device: {exc}") from None
        if self.lr_psnr is not None:
            if not MIN_LR_PSNR_DB <= float(self.lr_psnr) <= MAX_LR_PSNR_DB:
                raise ConfigError(
                    f"lr_psnr must be between {MIN_LR_PSNR_DB:g} and {MAX_LR_PSNR_DB:g} dB, "
                    f"got {self.lr_psnr:g}"
                )
            set_("lr_psnr", float(self.lr_psnr))
        set_("seed", int(self.seed))
        methods = tuple(
            m if isinstance(m, MethodChoice) else MethodChoice.from_dict(m) for m in self.methods
        )
        names = [m.name for m in methods]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"methods: {twice[0]!r} is given twice")
        set_("methods", methods)

    # ------------------------------------------------------------------ views

    @property
    def method_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.methods)

    def method(self, name: str) -> MethodChoice:
        """The :class:`MethodChoice` called ``name``."""
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(
            f"method {name!r} is not in this configuration ({', '.join(self.method_names)})"
        )

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """JSON types only; :meth:`from_dict` gives an equal object back."""
        return {
            "version": self.version,
            "lr": self.lr,
            "hr": self.hr,
            "truth": self.truth,
            "simulate": self.simulate,
            "keys": self.keys.to_dict(),
            "separation": self.separation,
            "frames": None if self.frames is None else list(self.frames),
            "normalise": self.normalise,
            "units": self.units,
            "device": self.device,
            "lr_psnr": self.lr_psnr,
            "seed": self.seed,
            "methods": [m.to_dict() for m in self.methods],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`; refuses an unknown version or unknown keys."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a run configuration is a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if version != CONFIG_VERSION:
            raise ConfigError(
                f"version: this is configuration version {version!r}; this napari-xfusion "
                f"reads version {CONFIG_VERSION}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        _refuse_unknown(data, known, "run configuration")
        values = dict(data)
        if "keys" in values:
            values["keys"] = KeyRule.from_dict(values["keys"] or {})
        if values.get("frames") is not None:
            values["frames"] = tuple(values["frames"])
        if "methods" in values:
            values["methods"] = tuple(MethodChoice.from_dict(m) for m in values["methods"] or ())
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the configuration as JSON, atomically; returns ``path``."""
        from napari_xfusion.core.io import write_text_atomic

        return write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunConfig:
        """Read a configuration written by :meth:`save`; errors name the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except ValueError as exc:
            raise ConfigError(f"{path}: not a JSON run configuration ({exc})") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
