"""Architecture names, :class:`NetConfig` (the hyper-parameters of a network) and named sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

ARCHS = ("edvr", "edvr-stf")
"""The paper's architectures (raw inputs), implemented in this module."""
ALL_ARCHS = (*ARCHS, "edvr-stf-flow")
"""Every architecture a :class:`NetConfig` may name; ``edvr-stf-flow`` is
:class:`napari_xfusion.nn.edvr_flow.EDVRSTFFlow` (built lazily by :func:`build_model`)."""
NUM_KEYS = 2
"""HR key frames of EDVR-STF (the one before and the one after the target)."""


@dataclass(frozen=True)
class NetConfig:
    """Architecture hyper-parameters; saved inside every checkpoint.

    Attributes
    ----------
    arch : {"edvr", "edvr-stf", "edvr-stf-flow"}
        LR frames only, LR frames plus two HR key frames, or LR frames plus the two keys warped
        to t along optical flow (:mod:`napari_xfusion.nn.edvr_flow`).
    num_feat : int
        Feature channels C of the LR-resolution body.
    deformable_groups : int
        Deformable groups of the DCNv2 layers in PCD alignment (C must be divisible by it).
    num_extract_block : int
        Residual blocks of the shared per-frame trunk.
    num_reconstruct_block : int
        Residual blocks R after fusion.
    with_tsa : bool
        TSA fusion (temporal + spatial attention); without it a 1x1 conv fuses the frames and
        no attention scores exist.
    num_frame : int
        LR frames per target (odd; the centre one is the reference).
    num_in_ch : int
        Image channels (1: grey x-ray; 3 only to reproduce BasicSR's RGB models).
    num_feat_hr : int
        Channels of the two convs at HR resolution after the up-samplers (BasicSR fixes 64);
        at 16x the LR pixel count these dominate a small model's cost.
    max_offset : float, optional
        Clamp every DCN offset to +-``max_offset`` pixels of its pyramid level (None: no bound,
        as in the paper). A guard for short, high-rate runs whose offsets blow up.
    """

    arch: str = "edvr-stf"
    num_feat: int = 64
    deformable_groups: int = 8
    num_extract_block: int = 5
    num_reconstruct_block: int = 10
    with_tsa: bool = True
    num_frame: int = 3
    num_in_ch: int = 1
    num_feat_hr: int = 64
    max_offset: float | None = None

    def __post_init__(self) -> None:
        if self.arch not in ALL_ARCHS:
            raise ValueError(f"arch must be one of {ALL_ARCHS}, got {self.arch!r}")
        for name in ("num_feat", "deformable_groups", "num_frame", "num_in_ch", "num_feat_hr"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_extract_block", "num_reconstruct_block"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_feat % self.deformable_groups:
            raise ValueError(
                f"num_feat {self.num_feat} must be divisible by deformable_groups "
                f"{self.deformable_groups}"
            )
        if self.num_frame % 2 == 0:
            raise ValueError(f"num_frame must be odd (centre = reference), got {self.num_frame}")
        if self.max_offset is not None and not float(self.max_offset) > 0:
            raise ValueError(f"max_offset must be None or > 0, got {self.max_offset}")

    @property
    def uses_hr_keys(self) -> bool:
        return self.arch != "edvr"

    @property
    def num_inputs(self) -> int:
        """Frames entering PCD/TSA: LR frames, plus the HR keys for EDVR-STF."""
        return self.num_frame + (NUM_KEYS if self.uses_hr_keys else 0)

    @property
    def center(self) -> int:
        """Index of the reference (LR t) among the inputs."""
        return self.num_frame // 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["max_offset"] is None:
            # Unbounded (the default): omitted, so configs saved before the field existed
            # compare equal.
            del d["max_offset"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown NetConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def differences(self, other: NetConfig) -> dict[str, tuple[Any, Any]]:
        """``{field: (self value, other value)}`` for every field that differs."""
        a, b = asdict(self), asdict(other)
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


# Sizes, independent of the arch (combine with `named_config(name, arch)`).
CONFIGS: dict[str, NetConfig] = {
    # The paper's EDVR-STF / EDVR-L size.
    "paper": NetConfig(num_feat=128, num_reconstruct_block=40, deformable_groups=8),
    # Trained on CPU and shipped. Measured (benchmarks/bench_networks.py, shared 2-core EPYC,
    # 1 thread, 100x256 -> 400x1024): EDVR-STF ~3.2 CPU-s per frame plain (PCD 55 %, HR key
    # encoder 30 %, whose full-resolution conv is the paper's design), ~2.6 s channels-last;
    # C=16 would be ~1.1 s but C=32 is the smallest width the issue allows and training
    # steps (crop 64, batch 4) stay at a few seconds. 8 deformable groups as in the paper.
    "small": NetConfig(num_feat=32, num_reconstruct_block=5, deformable_groups=8, num_feat_hr=16),
    # For tests only: untrained output is meaningless, but every code path runs.
    "tiny": NetConfig(
        num_feat=8,
        num_extract_block=1,
        num_reconstruct_block=1,
        deformable_groups=2,
        num_feat_hr=8,
    ),
}


def named_config(name: str, arch: str = "edvr-stf") -> NetConfig:
    """The named size ``paper`` / ``small`` / ``tiny`` for ``arch``."""
    try:
        base = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}") from None
    return replace(base, arch=arch)
