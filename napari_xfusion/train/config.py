"""Training configuration: small validated dataclasses, loaded from and saved as YAML.

The whole configuration is written next to every checkpoint (``config.yaml``) and into the
checkpoint's provenance, so any result can be traced to the exact recipe that produced it.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CONFIG_VERSION",
    "ModelSpec",
    "SourceSpec",
    "DataConfig",
    "OptimConfig",
    "ValConfig",
    "TrainConfig",
    "load_config",
    "save_config",
    "apply_overrides",
]

CONFIG_VERSION = 1
SOURCE_KINDS = ("simulated", "textures", "stacks", "real-motion")
ARCHS = ("edvr", "edvr-stf", "edvr-stf-flow")


@dataclass
class ModelSpec:
    """One network to train.

    Attributes
    ----------
    arch : str
        ``"edvr-stf"``, ``"edvr"`` or ``"edvr-stf-flow"`` (whose items carry the flow inputs,
        see ``DataConfig.flow_context``).
    net : str or dict
        Named size (``paper``, ``small``, ``tiny``) or a full :class:`nn.edvr.NetConfig` dict.
    init : str, optional
        Checkpoint to start from (fine-tuning); its architecture must match.
    name : str, optional
        Sub-folder of the run directory (default ``"<arch>-<net>"``).
    """

    arch: str = "edvr-stf"
    net: str | dict[str, Any] = "small"
    init: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"model arch must be one of {ARCHS}, got {self.arch!r}")
        if self.name is None:
            self.name = f"{self.arch}-{self.net if isinstance(self.net, str) else 'custom'}"


@dataclass
class SourceSpec:
    """One training data source and its share of the items.

    Attributes
    ----------
    kind : str
        ``"simulated"`` (x-ray simulation on the fly), ``"textures"`` (scikit-image images in
        motion), ``"real-motion"`` (:mod:`core.motion` camera motion, occluding layers and
        brightness changes over the *training* stills) or ``"stacks"`` (every TIFF stack /
        frame folder under ``path``).
    weight : float
        Relative frequency.
    path : str, optional
        Folder or stack file (``stacks`` only).
    options : dict
        Keyword arguments of the pool class (:class:`SimulatedPool`, :class:`TexturePool`,
        :class:`StackFolder`, :class:`RealMotionPool`).
    """

    kind: str = "simulated"
    weight: float = 1.0
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"data source kind must be one of {SOURCE_KINDS}, got {self.kind!r}")
        if self.kind == "stacks" and not self.path:
            raise ValueError("a 'stacks' data source needs a path")
        if self.weight < 0:
            raise ValueError(f"data source weight must be >= 0, got {self.weight}")


@dataclass
class DataConfig:
    """Sampling of training items (see :mod:`napari_xfusion.train.datasets`).

    Attributes
    ----------
    sources : list of SourceSpec
    crop : int
        HR crop size (paper 256; 64..128 on a CPU); a multiple of 4.
    batch_size : int
        Items per step *per process* (the global batch is ``batch_size * world_size``).
    separations : list of int
        LR separations s, drawn uniformly.
    key_offsets : [int, int]
        Range of the key offsets a, b: keys at ``t - s*a`` and ``t + s*b``.
    log10_b0 : [float, float] or None
        Range of log10 of the LR shot-noise blank-scan factor; None: no noise.
    augment : bool
        Random flips and 90-degree rotations.
    focus : int
        Candidate crops per item; the one whose target varies most is kept (1 = uniform
        crops). Large flat regions teach little; this spends a short run on structure.
    num_workers : int
        DataLoader worker processes (0: sample in the training process).
    flow_context : int
        HR box (square) the flow inputs of ``edvr-stf-flow`` items are computed on, around
        the crop (:class:`~napari_xfusion.train.datasets.FlowSampling`); only used when a
        model is ``edvr-stf-flow``.
    """

    sources: list[SourceSpec] = field(
        default_factory=lambda: [SourceSpec("simulated", 0.75), SourceSpec("textures", 0.25)]
    )
    crop: int = 64
    batch_size: int = 8
    separations: list[int] = field(default_factory=lambda: [1, 2, 3])
    key_offsets: list[int] = field(default_factory=lambda: [1, 20])
    log10_b0: list[float] | None = field(default_factory=lambda: [1.0, 7.0])
    augment: bool = True
    focus: int = 1
    num_workers: int = 0
    flow_context: int = 128

    def __post_init__(self) -> None:
        self.sources = [s if isinstance(s, SourceSpec) else SourceSpec(**s) for s in self.sources]
        if not self.sources:
            raise ValueError("give at least one data source")
        if self.crop % 4 or self.crop < 16:
            raise ValueError(f"crop must be a multiple of 4 and >= 16, got {self.crop}")
        if self.batch_size < 1 or self.focus < 1 or self.num_workers < 0:
            raise ValueError("batch_size and focus must be >= 1, num_workers >= 0")


@dataclass
class OptimConfig:
    """Optimisation.

    Attributes
    ----------
    iterations : int
        Total optimizer steps (an upper bound when ``time_budget_minutes`` is set).
    time_budget_minutes : float or None
        Also end the run after this much wall time (training time, summed over resumes),
        with the cosine annealing spread over it: for a fixed slot on a shared machine. The
        step count then depends on the machine's speed, so the run is not bit-reproducible.
    lr : float
        Peak learning rate of Adam.
    betas : [float, float]
    eta_min : float
        Final learning rate of the cosine annealing.
    warmup : int
        Steps of linear learning-rate warm-up before the cosine.
    tsa_iterations : int
        First steps training only the fusion module (BasicSR's ``tsa_iter``; for fine-tuning
        a model whose front end is already trained).
    charbonnier_eps : float
        Charbonnier loss ``mean(sqrt((y - x)^2 + eps^2))``.
    grad_clip : float or None
        Clip the global gradient norm (deformable offsets can blow up at high rates).
    """

    iterations: int = 10000
    time_budget_minutes: float | None = None
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eta_min: float = 1e-7
    warmup: int = 0
    tsa_iterations: int = 0
    charbonnier_eps: float = 1e-3
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        # YAML 1.1 reads "4e-4" (no dot) as a string: accept it as the number it means.
        self.lr, self.eta_min, self.charbonnier_eps = (
            float(self.lr),
            float(self.eta_min),
            float(self.charbonnier_eps),
        )
        self.betas = [float(b) for b in self.betas]
        if self.grad_clip is not None:
            self.grad_clip = float(self.grad_clip)
        if self.iterations < 1 or self.lr <= 0:
            raise ValueError("iterations must be >= 1 and lr > 0")
        if not 0 <= self.tsa_iterations < self.iterations:
            raise ValueError("tsa_iterations must lie in [0, iterations)")


@dataclass
class ValConfig:
    """Validation on a fixed held-out simulated sequence (seed below ``TRAINING_SEED_MIN``).

    Attributes
    ----------
    every : int
        Validate every this many steps (0: never; always at the end when > 0).
    seed : int
        Simulation seed of the held-out sequence (never drawn in training).
    n_frames : int
    shape : [int, int]
        Simulated frame size (HR pixels, multiples of 4).
    separation : int
    key_step : int
    targets : int
        Non-key frames evaluated, spread evenly over the sequence.
    real_motion : list of str
        Names of :data:`napari_xfusion.core.motion.SUITE` sequences (validation stills, never
        trained on) also validated, at ``real_shape`` with ``n_frames`` frames; their median
        is logged as ``real_psnr``.
    real_shape : [int, int]
    real_targets : int
        Targets per real-motion sequence.
    """

    every: int = 500
    seed: int = 20251
    n_frames: int = 41
    shape: list[int] = field(default_factory=lambda: [400, 512])
    separation: int = 1
    key_step: int = 20
    targets: int = 8
    real_motion: list[str] = field(default_factory=list)
    real_shape: list[int] = field(default_factory=lambda: [200, 512])
    real_targets: int = 3


@dataclass
class TrainConfig:
    """A training run (see the field classes)."""

    version: int = CONFIG_VERSION
    run_dir: str = "runs/train"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    models: list[ModelSpec] = field(default_factory=lambda: [ModelSpec()])
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    val: ValConfig = field(default_factory=ValConfig)
    log_every: int = 10
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0

    def __post_init__(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ValueError(f"config version {self.version} is not {CONFIG_VERSION}")
        self.models = [m if isinstance(m, ModelSpec) else ModelSpec(**m) for m in self.models]
        if not self.models:
            raise ValueError("give at least one model")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        for name, cls in (("data", DataConfig), ("optim", OptimConfig), ("val", ValConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _build(cls, value, name))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a nested dict; unknown keys raise ``ValueError``."""
        return _build(cls, d, "config")


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {sorted(unknown)}; known: {sorted(known)}")
    return cls(**d)


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML training config."""
    with open(path, encoding="utf-8") as f:
        return TrainConfig.from_dict(yaml.safe_load(f) or {})


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write ``config`` as YAML (atomically: a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` strings (values parsed as YAML) and re-validate.

    >>> cfg = apply_overrides(TrainConfig(), ["optim.lr=4e-4", "data.crop=96"])
    >>> cfg.optim.lr, cfg.data.crop
    (0.0004, 96)
    """
    d = config.to_dict()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        node = d
        *parents, leaf = key.strip().split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"override {item!r}: {p!r} is not a config section")
            node = node[p]
        if leaf not in node:
            raise ValueError(f"override {item!r}: unknown key {leaf!r}")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # "4e-4": YAML 1.1 has no exponent-only floats
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        node[leaf] = parsed
    return TrainConfig.from_dict(d)
