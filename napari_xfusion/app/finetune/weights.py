"""Which networks can be fine-tuned, and the weights a run starts from."""

from __future__ import annotations

import os
from pathlib import Path

from napari_xfusion.app.config import RunConfig
from napari_xfusion.app.finetune.split import FinetuneError

__all__ = ["network_methods", "source_weights"]


def network_methods() -> dict[str, str]:
    """Registered methods that are networks this code can fine-tune: name -> arch."""
    from napari_xfusion.methods.registry import available_methods
    from napari_xfusion.nn.edvr import ALL_ARCHS

    out = {}
    for name, spec in available_methods().items():
        if not spec.needs_weights:
            continue
        try:
            arch = getattr(spec.load_class(), "arch", None)
        except Exception:  # a broken plugin is not ours to fine-tune
            continue
        if arch in ALL_ARCHS:
            out[name] = arch
    return out


def source_weights(
    config: RunConfig, method: str, init: str | os.PathLike[str] | None = None
) -> tuple[str, Path]:
    """``(arch, path)`` of the weights to start from: ``init``, else the config's weights of
    ``method``, else its shipped weights (checked against their recorded sha256)."""
    from napari_xfusion.methods.registry import get_spec

    try:
        spec = get_spec(method)
    except ValueError as exc:
        raise FinetuneError(str(exc)) from None
    nets = network_methods()
    if method not in nets:
        why = "uses no network weights" if not spec.needs_weights else "is not an EDVR network"
        raise FinetuneError(
            f"{method} {why}: nothing to fine-tune; choose one of {', '.join(nets) or '(none)'}"
        )
    if init is None and method in config.method_names:
        init = config.method(method).weights
    if init is not None:
        path = Path(init)
        if not path.is_file():
            raise FinetuneError(f"weights {path}: no such file")
        return nets[method], path
    from napari_xfusion.methods.network import shipped_weights, verify_shipped_weights

    path = shipped_weights(method)
    if not path.is_file():
        raise FinetuneError(
            f"no shipped weights for {method} (looked for {path}); give the weights to start "
            "from (--init WEIGHTS)"
        )
    verify_shipped_weights(path)
    return nets[method], path
