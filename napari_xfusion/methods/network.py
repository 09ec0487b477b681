"""``edvr`` and ``edvr-stf``: the networks of :mod:`napari_xfusion.nn` behind the
:class:`~napari_xfusion.methods.base.Reconstructor` interface.

:meth:`reconstruct` runs one window; :meth:`reconstruct_stream` (what the engine drives) batches
``batch_size`` consecutive windows per forward and reuses per-frame features (LR encoder, HR key
encoder, trunk, pyramid) across windows through a :class:`~napari_xfusion.nn.edvr.FeatureCache`,
so only alignment, fusion and reconstruction run per target. Both give the same frames up to
float32 round-off.

``torch.inference_mode`` is entered inside every call: it is thread-local, and the GUI runs
methods in a worker thread. Torch's thread count is left to the caller (the engine sets it once).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from napari_xfusion.methods.base import Reconstruction, Reconstructor, WindowInputs
from napari_xfusion.nn.checkpoint import CheckpointError, load_model, sha256_file
from napari_xfusion.nn.device import check_device
from napari_xfusion.nn.edvr import FeatureCache, forward_cached, forward_tiled

__all__ = [
    "EDVRMethod",
    "EDVRSTFMethod",
    "NonFiniteOutputError",
    "WEIGHTS_DIR",
    "resolve_device",
    "shipped_weights",
    "verify_shipped_weights",
]

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "resources" / "weights"
"""Shipped weights: ``resources/weights/<method>-small.pt``, each with a ``.pt.sha256`` sidecar.

``napari_xfusion/resources`` is a symlink to the repository's top-level ``resources/``, so the
same path works in a checkout, an editable install and a wheel (which copies the files)."""

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def shipped_weights(name: str) -> Path:
    """Path of the shipped ``small`` weights of method ``name`` (may not exist)."""
    return WEIGHTS_DIR / f"{name}-small.pt"


def verify_shipped_weights(path: Path) -> str:
    """Check a shipped checkpoint against the sha256 recorded beside it; return the digest.

    Raises
    ------
    ValueError
        When the file's sha256 differs from its ``.sha256`` sidecar (a truncated download, a
        Git LFS pointer, or weights replaced without a new model card).
    """
    sidecar = path.with_name(path.name + ".sha256")
    actual = sha256_file(path)
    if sidecar.is_file():
        try:
            words = sidecar.read_text(encoding="utf-8", errors="replace").split()
        except OSError as exc:
            raise CheckpointError(f"{sidecar}: cannot be read ({exc.strerror or exc})") from None
        expected = words[0].lower() if words else ""
        if not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise CheckpointError(
                f"{sidecar}: expected the weights' sha256 (64 hex digits, as written by "
                f"sha256sum), found {'nothing' if not words else repr(words[0][:70])}; the "
                "file is damaged: reinstall the package or pass weights=<checkpoint path>"
            )
        if actual != expected:
            raise ValueError(
                f"shipped weights {path} have sha256 {actual}, but {sidecar.name} and the model "
                f"card record {expected}: the file is damaged or was replaced; reinstall the "
                f"package or pass weights=<checkpoint path>"
            )
    return actual


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else Apple MPS, else CPU; other names are checked
    (:func:`~napari_xfusion.nn.device.check_device`: a clear DeviceError when unusable)."""
    if str(device) != "auto":
        return check_device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class _NetworkMethod(Reconstructor):
    """Shared implementation; subclasses set :attr:`name` / :attr:`uses_hr_keys`.

    Parameters
    ----------
    weights : path-like, optional
        A checkpoint of :func:`napari_xfusion.nn.checkpoint.save_checkpoint` (or a BasicSR
        state dict whose config fits). None: the shipped ``resources/weights/<name>-small.pt``.
    device : str
        ``"auto"`` (CUDA > MPS > CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    batch_size : int
        Windows per forward in :meth:`reconstruct_stream`. For GPUs: on this project's CPU a
        batch of 4 took ~10-20 % *more* CPU time per frame than 1 (small EDVR-STF, 50x128 LR),
        and a batch delays its first frame.
    tile : int, optional
        Run frames in tiles of ``tile`` x ``tile`` LR pixels (plus ``overlap`` of context) to
        bound memory on large frames; tiled runs do not use the feature cache.
    overlap : int
        LR pixels of context around each tile.
    precision : {"float32", "bfloat16", "float16"}
        Autocast dtype of the forward (float32: none). Outputs are float32 either way. On this
        project's CPU (AMD EPYC with avx512_bf16) bfloat16 took ~30 % less time than float32
        (small config, 100x256 LR) and changed a trained model's frames by up to 1.5e-3 (PSNR
        within 0.001 dB on the simulated sample); opt-in, because CPUs without native bfloat16
        get slower and float32 results are reproducible to round-off.
    channels_last : bool, optional
        Channels-last memory format for the convs. None: on for CPU, where it took ~15-20 %
        less time with identical outputs (to 1e-7); off elsewhere (not measured there).
    cache_size : int
        Frames kept in the feature cache (raised to ``batch_size + 10`` if smaller, which
        avoids recomputation for separations up to 3).
    """

    name: ClassVar[str]
    uses_hr_keys: ClassVar[bool]
    arch: ClassVar[str]

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "auto",
        batch_size: int = 1,
        tile: int | None = None,
        overlap: int = 16,
        precision: str = "float32",
        channels_last: bool | None = None,
        cache_size: int = 16,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if tile is not None and int(tile) < 4:
            raise ValueError(f"tile must be None or >= 4 LR pixels, got {tile}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        if weights is None:
            path = shipped_weights(self.name)
            if not path.is_file():
                raise FileNotFoundError(
                    f"no shipped weights for {self.name!r} (looked for {path}); train a model "
                    f"(napari_xfusion.train) and pass weights=<checkpoint path>"
                )
            verify_shipped_weights(path)
        else:
            path = Path(weights)
        self.weights = path
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.tile = None if tile is None else int(tile)
        self.overlap = int(overlap)
        self.precision = precision
        # Grey frames and a 3-frame LR window are what WindowInputs carries.
        self.model = load_model(
            path,
            expect={"arch": self.arch, "num_in_ch": 1, "num_frame": 3},
            map_location=self.device,
        )
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # A batch of b targets spans b + 2s LR frames (s <= 3) and up to 4 keys; the next batch
        # reuses its trailing frames, so keep at least that many.
        self.cache = FeatureCache(max(int(cache_size), self.batch_size + 10))

    # -- Reconstructor ----------------------------------------------------------------------

    def reconstruct(self, inputs: WindowInputs) -> Reconstruction:
        return self._run([inputs], use_cache=False)[0]

    def reconstruct_stream(self, inputs: Iterable[WindowInputs]) -> Iterator[Reconstruction]:
        batch: list[WindowInputs] = []
        for item in inputs:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield from self._run(batch, use_cache=self.tile is None)
                batch = []
        if batch:
            yield from self._run(batch, use_cache=self.tile is None)

    def reset(self) -> None:
        self.cache.clear()

    def describe(self) -> dict[str, Any]:
        info = dict(self.model.checkpoint_info)
        return {
            "method": self.name,
            "weights": info.pop("weights"),
            "sha256": info.pop("sha256"),
            "config": info.pop("config"),
            "provenance": info.pop("provenance"),
            "weights_source": info.pop("source"),
            "device": str(self.device),
            "batch_size": self.batch_size,
            "tile": self.tile,
            "overlap": self.overlap,
            "precision": self.precision,
            "channels_last": self.channels_last,
        }

    # -- internals ---------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _hr_inputs(self, items: list[WindowInputs]) -> tuple[torch.Tensor | None, list[dict]]:
        """The HR input of one batch (None for LR-only networks) and each item's extras.

        EDVR-STF takes the raw keys, ``(B, 2, 1, 4h, 4w)``; subclasses feed other HR inputs
        (``edvr-stf-flow``: keys warped along the flow) and may return per-item extra maps.
        """
        extras: list[dict] = [{} for _ in items]
        if not self.uses_hr_keys:
            return None, extras
        hr = torch.from_numpy(np.stack([np.asarray(it.hr_keys, np.float32) for it in items]))
        return hr.unsqueeze(2), extras

    def _run(self, items: list[WindowInputs], use_cache: bool) -> list[Reconstruction]:
        """One forward for ``items`` (all of one frame size)."""
        to = {"device": self.device, "dtype": torch.float32}
        lr = torch.from_numpy(np.stack([np.asarray(it.lr, np.float32) for it in items]))
        lr = lr.unsqueeze(2).to(**to)  # (B, 3, 1, h, w)
        hr, extras = self._hr_inputs(items)
        hr = None if hr is None else hr.to(**to)
        with_attention = self.model.config.with_tsa
        with torch.inference_mode(), self._autocast():
            if self.tile is not None:
                result = forward_tiled(
                    self.model,
                    lr,
                    hr,
                    tile=self.tile,
                    overlap=self.overlap,
                    return_attention=with_attention,
                )
            elif use_cache:
                result = forward_cached(
                    self.model,
                    lr,
                    hr,
                    [it.window.lr_indices for it in items],
                    [it.window.keys for it in items] if self.uses_hr_keys else None,
                    self.cache,
                    return_attention=with_attention,
                )
            else:
                result = self.model(lr, hr, return_attention=with_attention)
        out, scores = result if with_attention else (result, None)
        frames = out[:, 0].float().cpu().numpy()
        _check_finite_output(frames, items, self.name, self.weights)
        attention = None if scores is None else scores.double().cpu().numpy()
        return [
            Reconstruction(
                frame=frames[i],
                attention=None if attention is None else attention[i],
                extras=extras[i],
            )
            for i in range(len(items))
        ]


class NonFiniteOutputError(ValueError):
    """A network produced NaN or infinity (damaged weights, overflow in float16 ...)."""


def _check_finite_output(
    frames: np.ndarray, items: list[WindowInputs], method: str, weights: Path
) -> None:
    """Raise naming the method, frame and weights when ``frames`` (B, H, W) hold NaN or inf."""
    ok = np.isfinite(frames).all(axis=(1, 2))
    if ok.all():
        return
    i = int(np.argmin(ok))
    bad = int(np.count_nonzero(~np.isfinite(frames[i])))
    raise NonFiniteOutputError(
        f"{method}: the network's output for frame {items[i].window.target} has {bad} NaN or "
        f"infinite pixel(s) (weights {weights}); the weights may be damaged, or the "
        "precision too low (try precision='float32'); no frame is written from it"
    )


class EDVRMethod(_NetworkMethod):
    """EDVR (LR frames t-s, t, t+s only). Attention: the 3 LR scores."""

    name = "edvr"
    uses_hr_keys = False
    arch = "edvr"


class EDVRSTFMethod(_NetworkMethod):
    """EDVR-STF (LR frames + the 2 HR keys). Attention: 3 LR scores, key before, key after."""

    name = "edvr-stf"
    uses_hr_keys = True
    arch = "edvr-stf"
