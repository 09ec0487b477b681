"""Deep models in plain PyTorch: DCNv2 (:mod:`.dcn`), EDVR and EDVR-STF (:mod:`.edvr`), shared
blocks (:mod:`.arch_util`) and checkpoints (:mod:`.checkpoint`)."""

from napari_xfusion.nn.edvr import (
    EDVR,
    EDVRSTF,
    FeatureCache,
    NetConfig,
    build_model,
    count_parameters,
    named_config,
)

__all__ = [
    "EDVR",
    "EDVRSTF",
    "FeatureCache",
    "NetConfig",
    "build_model",
    "count_parameters",
    "named_config",
]
