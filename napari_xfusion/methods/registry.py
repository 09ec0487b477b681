"""The open method registry: every method declared once, as a :class:`MethodSpec`.

The CLI (``--method``, ``--option METHOD.key=value``), the GUI (checkboxes, option widgets),
the demo and the benchmarks are built from these declarations. A method is imported only when
it is instantiated (``target`` is a ``"module:Class"`` string), so listing methods or running
``bicubic`` never imports torch.

Third-party packages add methods through the entry-point group ``napari_xfusion.methods``; each
entry point loads to a :class:`MethodSpec` or to a zero-argument callable returning one::

    [project.entry-points."napari_xfusion.methods"]
    my-method = "my_package.xfusion:SPEC"

A broken plugin gives a warning naming its entry point; the builtins always work.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

__all__ = [
    "BUILTIN_SPECS",
    "ENTRY_POINT_GROUP",
    "MethodSpec",
    "OptionSpec",
    "available_methods",
    "coerce_options",
    "get_reconstructor",
    "get_spec",
    "parse_option",
    "register",
]

ENTRY_POINT_GROUP = "napari_xfusion.methods"
OPTION_TYPES = ("int", "float", "str", "bool", "path")
_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "resources" / "weights"


@dataclass(frozen=True)
class OptionSpec:
    """One constructor option of a method.

    Attributes
    ----------
    name : str
        Keyword argument name.
    type : str
        ``"int"``, ``"float"``, ``"str"``, ``"bool"`` or ``"path"`` (a file path string).
    default : Any
        Default value (None = "not set", which the option's type then also accepts).
    help : str
        One line for ``--help`` and tooltips.
    choices : tuple, optional
        Allowed values.
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.type not in OPTION_TYPES:
            raise ValueError(
                f"option {self.name!r}: type must be one of {OPTION_TYPES}, got {self.type!r}"
            )


@dataclass(frozen=True)
class MethodSpec:
    """The declaration of one method.

    Attributes
    ----------
    name : str
        Registry name (``"edvr-stf"``).
    target : str
        ``"module:Class"`` of its :class:`~napari_xfusion.methods.base.Reconstructor`,
        imported on first use.
    summary : str
        One line for lists and ``--help``.
    needs_torch, needs_weights, uses_hr_keys : bool
        Whether it imports torch, loads a checkpoint (``weights`` option), reads the HR keys.
    outputs : tuple of str
        Extra per-frame maps it produces besides the frame (``"variance"``, ``"confidence"``).
    attention : bool
        Whether it reports temporal-attention scores (backward/forward columns).
    options : tuple of OptionSpec
        Its constructor options (``weights`` and ``device`` included for networks).
    default_weights : str, optional
        Path of its shipped weights (may not exist in a checkout without them).
    """

    name: str
    target: str
    summary: str = ""
    needs_torch: bool = False
    needs_weights: bool = False
    uses_hr_keys: bool = False
    outputs: tuple[str, ...] = ()
    attention: bool = False
    options: tuple[OptionSpec, ...] = ()
    default_weights: str | None = None

    def __post_init__(self) -> None:
        if ":" not in self.target:
            raise ValueError(
                f"method {self.name!r}: target must be 'module:Class', got {self.target!r}"
            )

    def option(self, name: str) -> OptionSpec:
        for opt in self.options:
            if opt.name == name:
                return opt
        known = ", ".join(o.name for o in self.options) or "none"
        raise ValueError(f"{self.name} has no option {name!r} (options: {known})")

    def load_class(self) -> type:
        module_name, class_name = self.target.split(":", 1)
        return getattr(import_module(module_name), class_name)


_NETWORK_OPTIONS = (
    OptionSpec("weights", "path", None, "checkpoint path (default: the shipped weights)"),
    OptionSpec("device", "str", "auto", "auto, cpu, cuda, cuda:N or mps"),
    OptionSpec("batch_size", "int", 1, "targets per forward pass"),
    OptionSpec("tile", "int", None, "tile size in LR pixels (>= 4) for large frames"),
    OptionSpec("overlap", "int", 16, "tile overlap in LR pixels"),
    OptionSpec(
        "precision", "str", "float32", "compute precision", ("float32", "bfloat16", "float16")
    ),
    OptionSpec("channels_last", "bool", None, "channels-last memory format (default: per device)"),
    OptionSpec("cache_size", "int", 16, "per-frame feature cache entries"),
)


def _network(name: str, target: str, summary: str, uses_keys: bool) -> MethodSpec:
    return MethodSpec(
        name=name,
        target=target,
        summary=summary,
        needs_torch=True,
        needs_weights=True,
        uses_hr_keys=uses_keys,
        attention=True,
        options=_NETWORK_OPTIONS,
        default_weights=str(_WEIGHTS_DIR / f"{name}-small.pt"),
    )


BUILTIN_SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "bicubic",
        "napari_xfusion.methods.bicubic:Bicubic",
        "x4 bicubic of the centre LR frame (the floor every method must beat)",
    ),
    MethodSpec(
        "bayesian",
        "napari_xfusion.methods.bayesian:Bayesian",
        "Bayesian data fusion of LR and the two HR keys (Xue et al. 2017), with variance",
        uses_hr_keys=True,
        outputs=("variance", "confidence"),
        options=(
            OptionSpec("n_classes", "int", None, "K-means classes (default: from the data)"),
            OptionSpec("seed", "int", 0, "K-means seed"),
            OptionSpec(
                "block_prior",
                "str",
                "correlated",
                "errors inside a 4x4 block",
                ("correlated", "independent"),
            ),  # fmt: skip
            OptionSpec("prior_weight", "float", 8.0, "weight of the prior towards interpolation"),
            OptionSpec("clip", "bool", True, "clip the result to [0, 1]"),
            OptionSpec(
                "prior",
                "str",
                "motion",
                "temporal prior: keys warped to t along optical flow (motion), or the paper's "
                "pixel-in-place model (static)",
                ("motion", "static"),
            ),  # fmt: skip
        ),
    ),
    _network("edvr", "napari_xfusion.methods.network:EDVRMethod", "EDVR video SR, LR only", False),
    _network(
        "edvr-stf",
        "napari_xfusion.methods.network:EDVRSTFMethod",
        "EDVR-STF: EDVR with the two HR keys as extra frames (Tang et al.)",
        True,
    ),
    MethodSpec(
        name="edvr-stf-flow",
        target="napari_xfusion.methods.flow_network:EDVRSTFFlowMethod",
        summary="EDVR-STF on the keys warped along the flow method's motion, learning a "
        "residual on flow's frame (with flow's confidence map)",
        needs_torch=True,
        needs_weights=True,
        uses_hr_keys=True,
        outputs=("confidence",),
        attention=True,
        options=_NETWORK_OPTIONS,
        default_weights=str(_WEIGHTS_DIR / "edvr-stf-flow-small.pt"),
    ),
    MethodSpec(
        "flow",
        "napari_xfusion.methods.flow:FlowMethod",
        "HR key detail carried to t along optical flow (no training), with a confidence map",
        uses_hr_keys=True,
        outputs=("confidence",),
        options=(
            OptionSpec(
                "preset", "str", "fast", "OpenCV DIS preset", ("ultrafast", "fast", "medium")
            ),
            OptionSpec("consistency", "float", 1.0, "forward-backward flow tolerance (HR px)"),
            OptionSpec(
                "photometric", "float", 0.03, "tolerated local mismatch key vs LR (intensity)"
            ),
            OptionSpec("bp_iterations", "int", 4, "back-projection iterations onto LR at t"),
            OptionSpec("noise_target", "float", 0.001, "noise s.d. the LR residual is smoothed to"),
            OptionSpec("max_chain", "int", 100, "longest chain of consecutive flows (frames)"),
        ),
    ),
)
"""The builtin methods; a new builtin is one more entry here."""

# name -> spec; None until first use (entry points are scanned once, refresh=True rescans).
_registry: dict[str, MethodSpec] | None = None
_extra: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> None:
    """Add (or replace) a method at run time, e.g. in tests or notebooks."""
    _extra[spec.name] = spec
    if _registry is not None:
        _registry[spec.name] = spec
    _sync_targets()


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def _load_plugin(ep: Any) -> MethodSpec | None:
    try:
        obj = ep.load()
        spec = obj if isinstance(obj, MethodSpec) else obj()
        if not isinstance(spec, MethodSpec):
            raise TypeError(f"loaded {type(spec).__name__}, not a MethodSpec")
    except Exception as exc:  # a plugin's bug must not break the builtins: say which one
        warnings.warn(
            f"napari-xfusion: method plugin entry point {ep.name!r} ({ep.value}) is broken "
            f"and was skipped: {type(exc).__name__}: {exc}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return spec


def available_methods(refresh: bool = False) -> dict[str, MethodSpec]:
    """Every method by name: builtins first, then entry-point plugins, then :func:`register`-ed.

    Cached; ``refresh=True`` scans the entry points again (after installing a plugin).
    """
    global _registry
    if _registry is None or refresh:
        found = {spec.name: spec for spec in BUILTIN_SPECS}
        for ep in _entry_points():
            spec = _load_plugin(ep)
            if spec is None:
                continue
            if spec.name in found:
                warnings.warn(
                    f"napari-xfusion: method plugin entry point {ep.name!r} declares "
                    f"{spec.name!r}, which already exists; skipped",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            found[spec.name] = spec
        found.update(_extra)
        _registry = found
        _sync_targets()
    return dict(_registry)


def _sync_targets() -> None:
    """Keep ``methods.METHODS`` (name -> target, the older API) in step with the registry."""
    from napari_xfusion.methods import METHODS

    for name, spec in (_registry or {}).items():
        METHODS.setdefault(name, spec.target)


def get_spec(name: str) -> MethodSpec:
    """The declaration of method ``name``.

    A name only in the older ``methods.METHODS`` dict (``name -> "module:Class"``) gets a bare
    declaration without options, so code that registers methods there keeps working.
    """
    from napari_xfusion.methods import METHODS

    specs = available_methods()
    spec = specs.get(name)
    target = METHODS.get(name)
    if spec is not None and (target is None or target == spec.target):
        return spec
    if target is not None:
        return MethodSpec(name, target, options=spec.options if spec else ())
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(specs)}")


def get_reconstructor(name: str, **options: Any) -> Any:
    """Instantiate method ``name`` with ``options`` (imports its module only now)."""
    return get_spec(name).load_class()(**options)


def _coerce(spec: MethodSpec, opt: OptionSpec, value: Any, given: str) -> Any:
    def fail(expected: str) -> ValueError:
        return ValueError(f"{given}: expected {expected}")

    if value is None:
        return None
    if isinstance(value, str) and opt.type != "str" and opt.type != "path":
        text = value.strip()
        if text.lower() in ("none", "null", ""):
            return None
        if opt.type == "int":
            try:
                value = int(text)
            except ValueError:
                raise fail("an integer") from None
        elif opt.type == "float":
            try:
                value = float(text)
            except ValueError:
                raise fail("a number") from None
        elif opt.type == "bool":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                value = True
            elif lowered in ("0", "false", "no", "off"):
                value = False
            else:
                raise fail("true or false")
    if opt.type == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise fail("an integer")
        value = int(value)
    elif opt.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        value = float(value)
    elif opt.type == "bool":
        if not isinstance(value, bool):
            raise fail("true or false")
    elif not isinstance(value, str):
        value = str(value) if opt.type == "path" and hasattr(value, "__fspath__") else value
        if not isinstance(value, str):
            raise fail("a path" if opt.type == "path" else "a string")
    if opt.choices is not None and value not in opt.choices:
        raise fail("one of " + ", ".join(map(str, opt.choices)))
    return value


def coerce_options(spec: MethodSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked against ``spec`` and converted to the declared types.

    Raises
    ------
    ValueError
        ``--option METHOD.key=value: expected an integer`` and the like; unknown keys name the
        known ones. A spec that declares no options (an older ``METHODS`` entry) passes any.
    """
    if not spec.options:
        return dict(options)
    out = {}
    for key, value in options.items():
        opt = spec.option(key) if key in {o.name for o in spec.options} else None
        if opt is None:
            known = ", ".join(o.name for o in spec.options)
            raise ValueError(
                f"--option {spec.name}.{key}: {spec.name} has no option {key!r} (options: {known})"
            )
        out[key] = _coerce(spec, opt, value, f"--option {spec.name}.{key}={value}")
    return out


def parse_option(spec: MethodSpec, text: str) -> tuple[str, Any]:
    """``"key=value"`` (or ``"METHOD.key=value"``) -> ``(key, typed value)`` for ``spec``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option {text}: expected key=value")
    prefix = f"{spec.name}."
    if key.startswith(prefix):
        key = key[len(prefix) :]
    return key, coerce_options(spec, {key: value})[key]
