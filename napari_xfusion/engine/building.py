"""Building methods by name for the engine: device check, options and torch threads."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from importlib import import_module
from typing import Any

from napari_xfusion.engine.inputs import InputError
from napari_xfusion.methods import (
    METHODS,
    Reconstructor,
    available_methods,
    get_reconstructor,
)

DEVICES = ("auto", "cpu", "cuda", "mps")
"""Device names the engine passes to network methods (``cuda:N`` is accepted too)."""


_threads_configured = False


def configure_torch_threads(n_threads: int | None = None) -> int:
    """Set torch's intra-op thread count once per process; returns it.

    Default: ``OMP_NUM_THREADS`` when set, else the CPU cores divided among the local ranks of
    a ``torchrun`` job (``LOCAL_WORLD_SIZE``), so ranks do not oversubscribe the machine.
    """
    global _threads_configured
    import torch

    if n_threads is None:
        if _threads_configured:
            return torch.get_num_threads()
        if os.environ.get("OMP_NUM_THREADS"):
            n_threads = int(os.environ["OMP_NUM_THREADS"])
        else:
            local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            n_threads = max(1, (os.cpu_count() or 1) // max(local_ranks, 1))
    torch.set_num_threads(int(n_threads))
    _threads_configured = True
    return int(n_threads)


def _check_device(device: str) -> str:
    """``device`` if this machine can run it, else :class:`InputError` saying what to use.

    Names: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``. CUDA / MPS are checked by
    :func:`napari_xfusion.nn.device.check_device` against the installed PyTorch build and the
    GPUs present (torch is imported only for those names).
    """
    device = str(device).strip().lower()
    base, _, index = device.partition(":")
    if base not in DEVICES or (index and (base != "cuda" or not index.isdigit())):
        raise InputError(f"unknown device {device!r}; choose from {', '.join(DEVICES)} or cuda:N")
    if base in ("cuda", "mps"):
        from napari_xfusion.nn.device import DeviceError, check_device

        try:
            check_device(device)
        except DeviceError as exc:
            raise InputError(str(exc)) from None
    return device


def _accepts(name: str, option: str) -> bool:
    """Whether method ``name``'s constructor takes ``option`` (imports its class)."""
    module_name, class_name = METHODS[name].split(":")
    cls = getattr(import_module(module_name), class_name)
    return option in inspect.signature(cls).parameters


def build_methods(
    methods: str | Reconstructor | Sequence[str | Reconstructor],
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "auto",
) -> list[Reconstructor]:
    """Instantiate methods by name (instances pass through), as :func:`run` does.

    Network methods get ``device`` unless their options name one; torch's thread count is set
    once when one is built. Use it to build (and :meth:`~Reconstructor.describe`) methods once
    and pass the instances to several runs.
    """
    return [m for _, m in _make_methods(methods, method_options, _check_device(device))]


def _make_methods(
    methods: str | Reconstructor | Sequence[str | Reconstructor],
    method_options: Mapping[str, Mapping[str, Any]] | None,
    device: str,
) -> list[tuple[str, Reconstructor]]:
    items = [methods] if isinstance(methods, (str, Reconstructor)) else list(methods)
    if not items:
        raise InputError("no method given")
    options = dict(method_options or {})
    available_methods()  # entry-point plugins join METHODS on first use
    out: list[tuple[str, Reconstructor]] = []
    uses_torch = False
    for item in items:
        if isinstance(item, Reconstructor):
            label, method = item.name, item
        else:
            label = item
            if label not in METHODS:
                raise InputError(f"unknown method {label!r}; choose from {', '.join(METHODS)}")
            opts = dict(options.get(label, {}))
            if _accepts(label, "device"):
                opts.setdefault("device", device)
                uses_torch = True
            method = get_reconstructor(label, **opts)
        if label in (name for name, _ in out):
            raise InputError(f"method {label!r} is given twice")
        out.append((label, method))
    unknown = set(options) - {name for name, _ in out}
    if unknown:
        raise InputError(f"options given for methods that are not run: {sorted(unknown)}")
    if uses_torch:
        configure_torch_threads()
    return out
