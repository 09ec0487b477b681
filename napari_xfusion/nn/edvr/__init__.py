"""EDVR (Wang et al. 2019) and EDVR-STF (Tang et al.) for grey x-ray frames, x4.

One implementation, configured by a :class:`NetConfig`:

- ``EDVR`` (``arch="edvr"``): LR frames t-s, t, t+s; the reference is LR t.
- ``EDVRSTF`` (``arch="edvr-stf"``): the same network with the two HR key frames encoded down to
  LR size (conv, conv + maxpool, conv + maxpool) and appended as frames 4 and 5 before PCD
  alignment and TSA fusion. TSA order: LR t-s, LR t, LR t+s, HR key before, HR key after.

Parameter names follow BasicSR's ``edvr_arch.py`` and the XFusion reference code
(``conv_first_hi``, ``conv1_hi``, ``conv2_hi`` for the HR encoder), so their state dicts load
without renaming (see :mod:`napari_xfusion.nn.checkpoint`).

The forward pass is split into a per-frame part that does not depend on the reference frame
(:meth:`EDVR.encode_lr`, :meth:`EDVRSTF.encode_keys`: encoder, residual trunk, pyramid) and a
per-target part (:meth:`EDVR.decode`: PCD alignment, TSA fusion, reconstruction), so that
:class:`FeatureCache` can reuse the first across consecutive targets.
"""

# Not in __all__ but imported from here (edvr_flow, checkpoint): `X as X` re-exports them.
from napari_xfusion.core.degrade import SCALE as SCALE
from napari_xfusion.nn.edvr.blocks import PCDAlignment as PCDAlignment
from napari_xfusion.nn.edvr.blocks import Pyramid
from napari_xfusion.nn.edvr.blocks import TSAFusion as TSAFusion
from napari_xfusion.nn.edvr.cache import FeatureCache, forward_cached, forward_tiled
from napari_xfusion.nn.edvr.config import (
    ALL_ARCHS,
    ARCHS,
    CONFIGS,
    NetConfig,
    named_config,
)
from napari_xfusion.nn.edvr.config import (
    NUM_KEYS as NUM_KEYS,
)
from napari_xfusion.nn.edvr.model import EDVR, EDVRSTF, build_model, count_parameters

__all__ = [
    "ALL_ARCHS",
    "ARCHS",
    "CONFIGS",
    "EDVR",
    "EDVRSTF",
    "FeatureCache",
    "NetConfig",
    "Pyramid",
    "build_model",
    "count_parameters",
    "forward_cached",
    "forward_tiled",
    "named_config",
]
