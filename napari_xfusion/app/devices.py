"""Device names for network methods, in one place: syntax, what is available, what ``auto`` is.

Only :func:`available_devices`, :func:`resolve_device` and :func:`ensure_device` import torch,
and only when called.
"""

from __future__ import annotations

import os

__all__ = [
    "DEVICES",
    "available_devices",
    "check_device",
    "ensure_device",
    "rank_device",
    "resolve_device",
]

DEVICES = ("auto", "cpu", "cuda", "mps")
"""Device names (``cuda:N`` is accepted too)."""


def check_device(device: str) -> str:
    """``device`` if it is a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    Syntax only, no torch import; raises ValueError naming the choices.
    """
    text = str(device)
    base, sep, number = text.partition(":")
    ok = base in DEVICES and (not sep or (base == "cuda" and number.isdigit()))
    if not ok:
        raise ValueError(f"unknown device {text!r}; choose from {', '.join(DEVICES)} or cuda:N")
    return text


def available_devices() -> list[str]:
    """Devices torch can run on here, for a picker: ``auto`` first, then cpu, cuda(:N), mps."""
    devices = ["auto", "cpu"]
    try:
        import torch
    except ImportError:  # the methods that need torch will say so when run
        return devices
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices += ["cuda"] if count == 1 else [f"cuda:{i}" for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def ensure_device(device: str) -> str:
    """``device`` checked against this machine's torch (ValueError says what to use instead).

    The torch-level check is :func:`napari_xfusion.nn.device.check_device`, the one the engine
    and the network methods use, so every face words a missing GPU the same way.
    """
    check_device(device)
    if device in ("auto", "cpu"):
        return device
    from napari_xfusion.nn.device import check_device as check_torch_device

    check_torch_device(device)
    return device


def resolve_device(device: str = "auto") -> str:
    """The concrete device ``auto`` stands for here (cuda, else mps, else cpu)."""
    ensure_device(device)
    if device != "auto":
        return device
    return next((d for d in available_devices()[2:] if d.startswith(("cuda", "mps"))), "cpu")


def rank_device(device: str, world_size: int) -> str:
    """Under torchrun each rank takes its own GPU: ``cuda:LOCAL_RANK`` (mod the GPU count)."""
    if world_size <= 1 or device not in ("auto", "cuda"):
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return "cpu" if device == "auto" else device
