"""Checkpoints of EDVR / EDVR-STF: weights with their configuration and provenance inside.

Our format is a ``torch.save`` dict (loaded with ``weights_only=True``, so a checkpoint cannot
run code)::

    {"format": "napari-xfusion-edvr", "version": 1,
     "config": NetConfig.to_dict(), "provenance": {...JSON-like...}, "params": state_dict}

BasicSR-style files (``{"params": ..., "params_ema": ...}`` or a bare state dict, as written by
BasicSR and the XFusion reference code) load too; their configuration is inferred from the
tensor shapes. The mapping of names:

- Our parameter names *are* BasicSR's ``EDVR`` names (``conv_first``, ``feature_extraction.i``,
  ``conv_l2_1`` ..., ``pcd_align.dcn_pack.l1.conv_offset``, ``fusion.temporal_attn1`` ...,
  ``reconstruction.i``, ``upconv1/2``, ``conv_hr``, ``conv_last``) and XFusion's ``EDVRSTF``
  names for the HR encoder (``conv_first_hi``, ``conv1_hi``, ``conv2_hi``): copied as they are.
- A ``module.`` (DataParallel / DDP) or ``_orig_mod.`` (``torch.compile``) prefix is removed.
- ``params_ema`` is preferred over ``params`` when both exist (the EMA weights are the ones
  BasicSR evaluates with).
- RGB -> grey, only when a grey model is expected (``expect`` with ``num_in_ch=1``): a grey
  frame fed to an RGB model is the same frame in all three channels, so the input convs
  (``conv_first``, ``conv_first_hi``) get their kernels summed over the input channels, and
  the grey output is the mean of the three outputs, so ``conv_last`` gets its kernels and bias
  averaged over the output channels. The result equals the RGB model's channel mean exactly.
- The XFusion paper model (``network_g`` of its ``xfusion/inference/config_dataset1.yml``:
  grey in/out, 128 features, 3 LR + 2 HR frames, 8 deformable groups, 5 / 40 blocks) infers
  to exactly ``named_config("paper", "edvr-stf")``.
- Not mapped (an error names them): the pre-deblur module (``predeblur.*``, ``hr_in``), and
  the ``fuse_searched_feat_ok`` extension of the XFusion code (``temporal_attn3``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from napari_xfusion.core.io import sha256_file
from napari_xfusion.nn.edvr import EDVR, NUM_KEYS, NetConfig, build_model

__all__ = [
    "FORMAT",
    "MAX_ABS_WEIGHT",
    "VERSION",
    "Checkpoint",
    "CheckpointError",
    "ConfigMismatchError",
    "check_config",
    "infer_config",
    "load_model",
    "read_checkpoint",
    "save_checkpoint",
    "sha256_file",
]

FORMAT = "napari-xfusion-edvr"
VERSION = 1

_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A file is not a usable checkpoint: unreadable, not a checkpoint, incomplete, wrong
    shapes or non-finite / absurd weights. The message names the file."""


class ConfigMismatchError(CheckpointError):
    """The checkpoint's configuration is not the expected one."""


# Largest |weight| accepted. Trained EDVR weights stay below ~10; values beyond this overflow
# float32 activations within a few layers (all-NaN frames), so they mean a damaged file.
MAX_ABS_WEIGHT = 1e5


@dataclass
class Checkpoint:
    """A checkpoint read from disk.

    Attributes
    ----------
    config : NetConfig
    state_dict : dict of str to Tensor
        Parameter names of :func:`~napari_xfusion.nn.edvr.build_model`'s model.
    provenance : dict
        Training provenance (data, iterations, metrics ...); empty for BasicSR files.
    sha256 : str
        Of the file's bytes.
    path : Path
    source : str
        ``"napari-xfusion"`` or ``"basicsr:<key>"`` (``params_ema``, ``params`` or ``-``).
    """

    config: NetConfig
    state_dict: dict[str, Tensor]
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    path: Path | None = None
    source: str = "napari-xfusion"

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary (no weights)."""
        return {
            "weights": None if self.path is None else str(self.path),
            "sha256": self.sha256,
            "source": self.source,
            "config": self.config.to_dict(),
            "provenance": self.provenance,
        }


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _strip_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: NetConfig | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> str:
    """Write ``model``'s weights with their configuration; returns the file's SHA-256.

    Parameters
    ----------
    path : path-like
        Written atomically (a temporary file in the same folder, then renamed).
    model : nn.Module
        An :class:`~napari_xfusion.nn.edvr.EDVR` / ``EDVRSTF``, possibly wrapped in DDP or
        ``torch.compile`` (unwrapped here).
    config : NetConfig, optional
        Defaults to ``model.config``; must equal it when given.
    provenance : mapping, optional
        JSON-serialisable training provenance (data, iterations, seed, metrics, git commit ...).
    """
    inner = _unwrap(model)
    model_config = getattr(inner, "config", None)
    if config is None:
        if not isinstance(model_config, NetConfig):
            raise ValueError("model has no NetConfig in .config: pass config=")
        config = model_config
    elif isinstance(model_config, NetConfig) and model_config != config:
        raise ConfigMismatchError(
            f"config differs from the model's own config: {config.differences(model_config)}"
        )
    provenance = dict(provenance or {})
    try:
        # Round trip through JSON: weights_only loading accepts only plain containers.
        provenance = json.loads(json.dumps(provenance))
    except TypeError as err:
        raise ValueError(f"provenance must be JSON-serialisable: {err}") from None
    state = {k: v.detach().cpu().clone() for k, v in _strip_prefixes(inner.state_dict()).items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "provenance": provenance,
        "params": state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(path)


def _count_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.conv1\.weight$")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def infer_config(state: Mapping[str, Tensor]) -> NetConfig:
    """The :class:`NetConfig` of a BasicSR / XFusion EDVR(-STF) state dict, from its shapes."""
    unsupported = sorted(
        {k.split(".")[0] for k in state if k.startswith("predeblur")}
        | {k for k in state if "temporal_attn3" in k}
    )
    if unsupported:
        raise ValueError(f"state dict has parts this EDVR does not implement: {unsupported}")
    try:
        num_feat, num_in_ch = state["conv_first.weight"].shape[:2]
        with_tsa = "fusion.temporal_attn1.weight" in state
        fusion = state["fusion.feat_fusion.weight" if with_tsa else "fusion.weight"]
        offset_out = state["pcd_align.dcn_pack.l1.conv_offset.weight"].shape[0]
        num_feat_hr = state["conv_hr.weight"].shape[0]
    except KeyError as err:
        raise ValueError(f"not an EDVR state dict: no {err.args[0]!r}") from None
    stf = "conv_first_hi.weight" in state
    num_inputs = fusion.shape[1] // num_feat
    return NetConfig(
        arch="edvr-stf" if stf else "edvr",
        num_feat=int(num_feat),
        # conv_offset predicts (dy, dx, mask logit) for each of the 3x3 taps of every group.
        deformable_groups=int(offset_out) // 27,
        num_extract_block=_count_blocks(state, "feature_extraction"),
        num_reconstruct_block=_count_blocks(state, "reconstruction"),
        with_tsa=with_tsa,
        num_frame=int(num_inputs) - (NUM_KEYS if stf else 0),
        num_in_ch=int(num_in_ch),
        num_feat_hr=int(num_feat_hr),
    )


def _to_grey(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map an RGB model's state to the grey model equal to its channel mean (module docstring)."""
    out = dict(state)
    for name in ("conv_first.weight", "conv_first_hi.weight"):
        if name in out:
            out[name] = out[name].sum(1, keepdim=True)
    out["conv_last.weight"] = out["conv_last.weight"].mean(0, keepdim=True)
    out["conv_last.bias"] = out["conv_last.bias"].mean(0, keepdim=True)
    return out


def _expected_fields(expect: NetConfig | str | Mapping[str, Any] | None) -> dict[str, Any]:
    if expect is None:
        return {}
    if isinstance(expect, NetConfig):
        return expect.to_dict()
    if isinstance(expect, str):
        return {"arch": expect}
    known = {f.name for f in dataclasses.fields(NetConfig)}
    unknown = sorted(set(expect) - known)
    if unknown:
        raise ValueError(f"unknown NetConfig field(s) in expect: {unknown}")
    return dict(expect)


def check_config(
    found: NetConfig,
    expect: NetConfig | str | Mapping[str, Any] | None,
    where: str = "checkpoint",
) -> None:
    """Raise :class:`ConfigMismatchError` naming every field of ``found`` that ``expect`` rejects.

    ``expect`` is a full :class:`NetConfig`, an arch name, or a dict of the fields that matter.
    """
    want = _expected_fields(expect)
    have = dataclasses.asdict(found)
    diffs = [
        f"{k}: {have[k]!r} in the {where}, expected {v!r}" for k, v in want.items() if have[k] != v
    ]
    if diffs:
        raise ConfigMismatchError(
            f"{where} does not match the expected configuration ({'; '.join(diffs)})"
        )


def read_checkpoint(
    path: str | os.PathLike, expect: NetConfig | str | Mapping[str, Any] | None = None
) -> Checkpoint:
    """Read our format or a BasicSR-style file and check it against ``expect`` (see
    :func:`check_config`); tensors are loaded on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = _load_payload(path)
    digest = sha256_file(path)
    where = f"checkpoint {path.name}"

    if payload.get("format") == FORMAT:
        if payload.get("version") != VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format version {payload.get('version')!r}, this code reads "
                f"version {VERSION}"
            )
        missing = [k for k in ("config", "params") if k not in payload]
        if missing:
            raise CheckpointError(
                f"{path}: a napari-xfusion checkpoint without {' and '.join(map(repr, missing))}"
                "; expected the network configuration and its weights (save_checkpoint writes "
                "both)"
            )
        if not isinstance(payload["config"], Mapping):
            raise CheckpointError(f"{path}: 'config' is a {type(payload['config']).__name__}, "
                                  "expected a dict of NetConfig fields")  # fmt: skip
        try:
            config = NetConfig.from_dict(payload["config"])
        except (TypeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: invalid network configuration: {err}") from None
        check_config(config, expect, where)
        state = _tensor_dict(payload["params"], path, "params")
        provenance = payload.get("provenance")
        return Checkpoint(
            config, state, dict(provenance) if isinstance(provenance, Mapping) else {},
            digest, path,
        )  # fmt: skip

    # BasicSR: {"params": sd, "params_ema": sd} or a bare state dict.
    key = next((k for k in ("params_ema", "params") if k in payload), None)
    state = payload[key] if key is not None else payload
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())
    ):
        raise CheckpointError(
            f"{path}: neither a napari-xfusion checkpoint nor a BasicSR state dict (a dict of "
            f"top-level keys {sorted(map(str, payload))[:6]}); expected the output of "
            "napari_xfusion.nn.checkpoint.save_checkpoint or a BasicSR EDVR .pth"
        )
    state = _tensor_dict(_strip_prefixes(state), path, key or "state dict")
    try:
        config = infer_config(state)
    except (ValueError, TypeError, IndexError) as err:
        raise CheckpointError(f"{path}: {err}") from None
    want = _expected_fields(expect)
    if want.get("num_in_ch") == 1 and config.num_in_ch == 3:
        state = _to_grey(state)
        config = NetConfig.from_dict({**config.to_dict(), "num_in_ch": 1})
    check_config(config, expect, where)
    return Checkpoint(config, state, {}, digest, path, f"basicsr:{key or '-'}")


def _describe_file(path: Path) -> str:
    """What a file that is not a checkpoint looks like, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "an empty file"
    known = (
        (b"version https://git-lfs", "a Git LFS pointer (the weights were not downloaded; run "
                                     "'git lfs pull')"),
        (b"II*\x00", "a TIFF image"),
        (b"MM\x00*", "a TIFF image"),
        (b"\x89PNG", "a PNG image"),
        (b"<", "an HTML/XML page (a failed download?)"),
        (b"{", "a JSON file"),
        (b"\x89HDF", "an HDF5 file (Keras/h5py)"),
    )  # fmt: skip
    for magic, what in known:
        if head.startswith(magic):
            return what
    return f"not a PyTorch file (it starts with {head[:16]!r})"


def _load_payload(path: Path) -> Mapping:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch's zip nor a raw pickle
            raise CheckpointError(
                f"{path}: is {_describe_file(path)}; expected a PyTorch checkpoint (.pt) of "
                "napari_xfusion.nn.checkpoint.save_checkpoint or a BasicSR EDVR .pth"
            ) from None
        found = re.search(r"Unsupported global: GLOBAL [\w.]+", text)
        if found or "Weights only load failed" in text:
            # PyTorch's own text goes on to suggest turning weights_only off: exactly what must not
            # be done with an untrusted file, so only the offending global is quoted.
            what = f" ({found.group(0)})" if found else ""
            raise CheckpointError(
                f"{path}: a PyTorch file holding Python objects besides tensors{what}; refused "
                "because loading it would run code. Expected a checkpoint of "
                "save_checkpoint (weights, config and provenance only)"
            ) from None
        raise CheckpointError(
            f"{path}: a damaged or truncated PyTorch file ({type(err).__name__}: {text[:200]})"
        ) from None
    if not isinstance(payload, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(payload).__name__}, expected a dict (a checkpoint)"
        )
    return payload


def _tensor_dict(state: Any, path: Path, what: str) -> dict[str, Tensor]:
    """``state`` checked: str -> floating tensors, all finite and below MAX_ABS_WEIGHT."""
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{path}: {what!r} is not a dict of named tensors")
    for name, tensor in state.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise CheckpointError(
                f"{path}: weight {name} holds {bad} NaN/infinite value(s); the checkpoint is "
                "damaged (or saved from a diverged training run)"
            )
        peak = float(tensor.detach().abs().max())
        if peak > MAX_ABS_WEIGHT:
            raise CheckpointError(
                f"{path}: weight {name} reaches |{peak:.3g}|, beyond {MAX_ABS_WEIGHT:g}; such "
                "weights overflow the network's activations (a damaged checkpoint)"
            )
    return dict(state)


def load_model(
    path: str | os.PathLike,
    expect: NetConfig | str | Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> EDVR:
    """Build the model stored in ``path`` with its weights, in eval mode.

    ``model.checkpoint_info`` holds :meth:`Checkpoint.describe` (path, sha256, config,
    provenance). Raises :class:`ConfigMismatchError` if the checkpoint does not match
    ``expect`` (a :class:`NetConfig`, an arch name or a dict of fields).
    """
    ckpt = read_checkpoint(path, expect)
    model = build_model(ckpt.config)
    own = model.state_dict()
    wrong = [
        f"{name} {tuple(t.shape)} (expected {tuple(own[name].shape)})"
        for name, t in ckpt.state_dict.items()
        if name in own and tuple(t.shape) != tuple(own[name].shape)
    ]
    if wrong:
        raise CheckpointError(
            f"{path}: {len(wrong)} tensor(s) do not have the shapes its configuration "
            f"implies: {'; '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}"
        )
    missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit {ckpt.config}: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    model.checkpoint_info = ckpt.describe()
    return model.to(map_location).eval()
