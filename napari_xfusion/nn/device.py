"""One check of a requested torch device against the installed PyTorch and the machine.

Used by the engine (before any work) and by the network methods, so ``--device cuda`` on a
CPU-only PyTorch gives one clear sentence instead of a traceback from deep inside torch.
"""

from __future__ import annotations

import torch

__all__ = ["DeviceError", "check_device"]


class DeviceError(ValueError):
    """The requested device does not exist on this machine or in this PyTorch build."""


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` after checking it can be used.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (resolve ``"auto"`` first).

    Raises
    ------
    DeviceError
        A name torch does not know, CUDA / MPS missing from this PyTorch build or this
        machine, or ``cuda:N`` past the GPUs present. The message says what to use instead.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(
            f"unknown device {str(device)!r}; choose from auto, cpu, cuda, cuda:N, mps"
        ) from None
    version = torch.__version__
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built() or torch.version.cuda is None:
            raise DeviceError(
                f"CUDA was requested but this PyTorch build has no CUDA support (torch "
                f"{version}); use --device cpu or auto, or install a CUDA build of PyTorch"
            )
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(
                f"CUDA was requested but no CUDA GPU is usable (torch {version}, CUDA "
                f"{torch.version.cuda}: no GPU visible or no driver); use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= count:
            raise DeviceError(
                f"{dev} was requested but this machine has {count} CUDA GPU(s) "
                f"(cuda:0{f' .. cuda:{count - 1}' if count > 1 else ''}); use one of those, "
                "cpu or auto"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_built():
            raise DeviceError(
                f"MPS (Apple GPU) was requested but this PyTorch build has no MPS support "
                f"(torch {version}); use --device cpu or auto"
            )
        if not mps.is_available():
            raise DeviceError(
                "MPS (Apple GPU) was requested but it is not available on this machine (it "
                "needs macOS 12.3+ on Apple silicon); use --device cpu or auto"
            )
    elif dev.type != "cpu":
        raise DeviceError(f"device {str(device)!r} is not supported; use cpu, cuda or mps")
    return dev
