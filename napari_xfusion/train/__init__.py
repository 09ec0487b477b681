"""Training of EDVR / EDVR-STF: datasets, loop, configuration, DDP under ``torchrun``.

>>> from napari_xfusion.train import main
>>> main(["--arch", "edvr-stf", "--net", "tiny", "--print-config"])  # doctest: +SKIP

``main`` is what ``xfusion train`` and ``python -m napari_xfusion.train`` run.
"""

from napari_xfusion.train.cli import main
from napari_xfusion.train.config import (
    DataConfig,
    ModelSpec,
    OptimConfig,
    SourceSpec,
    TrainConfig,
    ValConfig,
    load_config,
    save_config,
)

__all__ = [
    "main",
    "TrainConfig",
    "ModelSpec",
    "SourceSpec",
    "DataConfig",
    "OptimConfig",
    "ValConfig",
    "load_config",
    "save_config",
]
