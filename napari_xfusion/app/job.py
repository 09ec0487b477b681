"""The run loop both faces consume: :func:`run_job` yields plain events; the CLI writes them
to :class:`~napari_xfusion.app.export.ExportWriter` s, the GUI renders them.

Methods are built from the configuration through the registry, reusing a ``method_cache``
keyed by name, options, weights and device (the GUI loads a network once per session).
Metrics are computed here, once, into a :class:`~napari_xfusion.app.results.ResultTable`.
Closing the generator cancels between frames; everything yielded before stays valid.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xfusion.app.config import RunConfig
from napari_xfusion.app.inputs import InputError, PreparedInputs
from napari_xfusion.app.results import FrameRow, ResultTable

__all__ = ["FrameEvent", "JobEvent", "JobStarted", "build_methods", "method_key", "run_job"]


@dataclass
class JobStarted:
    """First event: the methods are built, frames are about to come."""

    methods: list[Any]  # Reconstructor instances, in config order
    descriptions: dict[str, dict[str, Any]]  # name -> describe()
    table: ResultTable
    targets: np.ndarray
    total: int  # results to come (frames x methods)
    device: str


@dataclass
class FrameEvent:
    """One reconstructed frame of one method."""

    result: Any  # engine.FrameResult
    row: FrameRow
    table: ResultTable  # the run's table so far (the same object every event)
    done: int
    total: int
    extras: dict[str, Any] = field(default_factory=dict)


JobEvent = JobStarted | FrameEvent


def method_key(name: str, options: dict[str, Any], device: str) -> str:
    """Cache key of a built method: name, options (weights included) and device."""
    return json.dumps([name, options, device], sort_keys=True, default=str)


def build_methods(
    config: RunConfig,
    method_cache: MutableMapping[str, Any] | None = None,
    *,
    device: str | None = None,
) -> list[Any]:
    """The configuration's methods (registry declarations), from ``method_cache`` where name,
    options, weights and device match; one instance per name is kept in the cache."""
    from napari_xfusion import engine
    from napari_xfusion.app.devices import ensure_device
    from napari_xfusion.methods.registry import get_spec

    device = config.device if device is None else device
    cache = method_cache if method_cache is not None else {}
    out = []
    for choice in config.methods:
        spec = get_spec(choice.name)
        options = choice.constructor_options()
        if spec.needs_torch:
            try:
                ensure_device(options.get("device", device))
            except ValueError as exc:
                raise InputError(f"{choice.name}: {exc}") from None
        key = method_key(choice.name, options, device)
        if key not in cache:
            for stale in [k for k in cache if json.loads(k)[0] == choice.name]:
                del cache[stale]  # a network with other weights / device: free it
            (cache[key],) = engine.build_methods(
                [choice.name], {choice.name: options} if options else None, device
            )
        out.append(cache[key])
    return out


def _inference_mode() -> contextlib.AbstractContextManager[Any]:
    """torch's inference mode when torch is loaded (thread-local: entered per frame)."""
    torch = sys.modules.get("torch")
    return torch.inference_mode() if torch is not None else contextlib.nullcontext()


def run_job(
    config: RunConfig,
    prepared: PreparedInputs,
    methods: Sequence[Any] | None = None,
    method_cache: MutableMapping[str, Any] | None = None,
    *,
    targets: np.ndarray | Sequence[int] | None = None,
    device: str | None = None,
) -> Iterator[JobEvent]:
    """Run ``config`` on ``prepared``: yields :class:`JobStarted`, then one
    :class:`FrameEvent` per (frame, method) in time order.

    Parameters
    ----------
    methods : sequence of Reconstructor, optional
        Ready instances (default: built from ``config.methods`` via :func:`build_methods`).
    method_cache : mutable mapping, optional
        Reused across runs (see :func:`build_methods`).
    targets : sequence of int, optional
        A subset of ``prepared.targets`` (a torchrun rank's chunk); default all.
    device : str, optional
        Overrides ``config.device`` (a torchrun rank's own GPU).

    Closing the generator stops between frames; metrics are in ``event.table``.
    """
    from napari_xfusion import engine  # module attribute: tests may wrap engine.run

    device = config.device if device is None else device
    if not config.methods and methods is None:
        raise InputError("no method chosen: pick at least one")
    instances = (
        list(methods) if methods is not None else build_methods(config, method_cache, device=device)
    )
    targets = prepared.targets if targets is None else np.asarray(targets, dtype=np.int64)
    table = ResultTable(
        prepared.keys.indices, prepared.truth_frame if prepared.truth is not None else None
    )
    names = [getattr(m, "name", str(m)) for m in instances]
    descriptions = {n: m.describe() for n, m in zip(names, instances, strict=True)}
    total = len(targets) * len(instances)
    yield JobStarted(instances, descriptions, table, targets, total, device)
    if not len(targets):
        return
    stream = engine.run(
        instances,
        prepared.lr,
        prepared.keys,
        separation=prepared.separation,
        frames=targets,
        device=device,
        lr_normalisation=prepared.lr_normalisation,
    )
    done = 0
    try:
        while True:
            with _inference_mode():
                result = next(stream, None)
            if result is None:
                break
            row = table.add(result)
            done += 1
            extras = dict(result.extras)
            if result.variance is not None:
                extras.setdefault("variance", result.variance)
            yield FrameEvent(result, row, table, done, total, extras)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
