"""Motion-compensated transfer of HR key detail along optical flow: the ``flow`` method's core.

No training, numpy and OpenCV only. For a target LR time ``t`` and each of its two HR keys
``k`` (the window's ``key_before`` / ``key_after``):

1. Optical flow on the bicubic-up-sampled LR frames ``U_i = up(LR_i)`` (they exist at every
   time, the key times included), with OpenCV's DIS optical flow. A flow ``F_a->b`` is defined
   on the grid of frame ``a``: ``U_a(x) ~ U_b(x + F_a->b(x))`` (OpenCV's ``calc(I0=a, I1=b)``).
   The LR frames are smoothed a little before (their aliasing does not move with the scene),
   more with shot noise; one 8-bit mapping per key pair keeps the brightness constant.
2. Two candidate flows ``t -> k``: the *direct* one (DIS between ``U_t`` and ``U_k``) and one
   *chained* frame by frame through the LR frames in between, ``F_t->k(x) = S_t->t+-1(x) +
   F_t+-1->k(x + S_t->t+-1(x))`` with ``S`` the flows of consecutive frames (each computed once
   per run and cached; the chain is carried from one target to the next, so a stream costs one
   composition per frame and direction). Large motion that DIS misses between distant frames is
   followed by the chain; the direct flow does not accumulate drift. A third candidate is no
   motion at all (DIS returns some flow on still but flat or noisy frames, and warping along it
   only blurs the key); it pays for contradicting a consistent flow of more than 2 HR pixels,
   since a pan over texture the LR cannot resolve also looks still at LR. Per pixel the
   candidate with the lowest cost wins::

       cost = (e_fb / tol_fb)^2 + e_ph / tol_ph^2
       e_fb = |F_t->k(x) + F_k->t(x + F_t->k(x))|          forward-backward inconsistency
       e_ph = G * (D - G4 * D)^2 - expected noise,  D = V_t - V_k(x + F_t->k)

   ``tol_fb^2 = consistency^2 + 0.01 (|F_t->k|^2 + |F_k->t|^2)`` (HR pixels; the usual
   relative term of Sundaram et al. 2010 for long motion), ``tol_ph = photometric`` (intensity),
   ``V`` the (smoothed) LR frames, ``G`` a Gaussian of 1 LR pixel and ``G4`` one of 4: the
   local photometric mismatch without its smooth part (a brightness change between the key and
   t is not a motion error; the correction term and the back-projection take care of it; camera
   with a 2%/frame gain: 39.8 -> 45.1 dB, 48.6 dB without the change). The key's confidence is
   ``exp(-cost / 2)``, zero where the flow leaves the frame: occluded or disoccluded pixels
   (an object that appears or disappears between the key and ``t``) have no consistent flow.
   The flow bookkeeping runs on the coarse *flow grid* (HR / ``2**finest_scale`` of DIS, i.e.
   the resolution DIS actually estimates at; 4 for the fast presets = the LR grid) and the
   selected flow and confidence are up-sampled to HR once.
3. Candidate per key ``C_k = Ud_t + W_k(key_k - Ud_k)`` (``W_k`` backward warping along the
   selected flow, ``Ud`` the up-sampled *denoised* LR frames: with a noisy LR stream the
   correction term ``Ud_t - W_k(Ud_k)`` would otherwise carry the shot noise of two LR frames
   into the result). The two candidates are blended per pixel with weights ``conf_k * tau_k``
   (``tau_k`` inverse distance in time, normalised), and the blend is gated by ``c = 1 -
   prod_k (1 - conf_k)``: where no key can be trusted the result falls back to ``U_t``, the
   bicubic frame. ``c`` is the confidence map the method reports (H, W) in [0, 1].
4. LR consistency by iterative back-projection: ``x <- x + up(G_n * (LR_t - B(x)))``, ``B`` the
   4x4 block mean. Noise-free, ``G_n`` is the identity and ``B(x)`` converges to ``LR_t``; with
   shot noise, the residual is smoothed by a Gaussian ``G_n`` whose width makes the noise left
   in it small (``sigma_n / (2 sqrt(pi) width) = noise_target``): only the part of the residual
   that is signal (model error) is put back, the noise is not amplified into the HR frame. The
   noise level ``sigma_n`` is measured where it is known exactly: the LR frames at the key times
   against the 4x4 block means of the keys.

At a key time the key is returned with confidence 1.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from napari_xfusion.core.degrade import SCALE, bin_frames

__all__ = [
    "SCALE",
    "PRESETS",
    "KeyMotion",
    "FlowFuser",
    "make_dis",
    "flow_image",
    "dis_flow",
    "warp",
    "compose",
    "fb_error",
    "resize_flow",
    "key_noise_sigma",
    "denoise_width",
    "gaussian",
    "back_project",
]


PRESETS: dict[str, int] = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
"""OpenCV DIS presets by name."""

_FB_RELATIVE = 0.01  # Sundaram et al.'s relative forward-backward tolerance (of |F|^2)
_EPS = 1e-6
_DIS_MIN_SIZE = 12  # OpenCV's DIS needs a frame at least this wide or high
# Gaussian widths in LR pixels, measured on skimage's camera translated (3, 1) px/frame, k = 20,
# 384x384 (median PSNR between keys, noise-free / 40 / 20 dB LR PSNR):
# - the LR frames are blurred by at least this before DIS: bicubic up-sampling of a binned
#   frame keeps its aliasing, which moves differently from the scene (0: 30.0 / 35.3 / 22.5 dB;
#   0.7: 38.5 / 35.7 / 22.5 dB; 1.5: 37.6 / 34.1 dB);
_FLOW_SMOOTHING = 0.7
# - with noise, by this fraction of the denoising width: DIS needs the texture that full
#   denoising removes (20 dB: 1.0 -> 22.5 dB, 0.25 -> 23.9 dB, 0 -> 22.7 dB);
_FLOW_DENOISE = 0.25
_FLOW_NOISE = 0.004  # ... of the width that smooths the noise down to this sd
# - the correction term Ud_t - W(Ud_k) is smoothed by at least this (aliasing again: 0 -> 35.0
#   / 35.4 dB, 1 -> 38.5 / 35.7 dB, 2 -> 38.6 / 35.8 dB; 20 dB unchanged).
_DETAIL_SMOOTHING = 1.0
# The "no motion" candidate (see FlowFuser.motion). It pays support * min((|F| / consistency -
# _STILL_FREE)^2, _STILL_CAP) for contradicting a forward-backward consistent flow F, and is
# never taken at a cost above _STILL_MAX_COST (confidence exp(-1)): where every candidate is
# poor (the flow leaves the frame) the selected flow stays DIS's, so the bilinear up-sampling of
# the flow does not mix zero into the trusted neighbours. Measured (median PSNR between keys,
# clean / 40 / 20 dB; camera 384x384 translated (3, 1) px/frame, k = 20; simulator seed 123,
# k = 20): without the candidate camera 38.4 / 35.6 / 24.0, sim 41.4 / 37.8 / 24.3 dB; free,
# unpenalised camera 36.9 / 34.7 / 24.1, sim 42.2 / 39.2 / 29.4 dB; as set camera 38.4 / 35.6 /
# 24.6, sim 41.8 / 38.8 / 27.8 dB (free 1: sim 41.7 / 38.5 / 27.3; free 4: camera 38.2 dB).
_STILL_FREE = 2.0
_STILL_CAP = 50.0
_STILL_MAX_COST = 2.0


# --------------------------------------------------------------------------------------------
# Flow primitives


def make_dis(preset: str = "fast") -> cv2.DISOpticalFlow:
    """An OpenCV DIS optical-flow estimator with a named preset (see :data:`PRESETS`)."""
    try:
        return cv2.DISOpticalFlow_create(PRESETS[preset])
    except KeyError:
        raise ValueError(
            f"unknown DIS preset {preset!r}; choose from {', '.join(PRESETS)}"
        ) from None


def flow_image(frame: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A float frame as the 8-bit image DIS needs, ``[lo, hi]`` stretched to ``[0, 255]``.

    The same ``lo``/``hi`` for every frame of a key pair keeps brightness constancy; the stretch
    keeps low-contrast x-ray frames from collapsing to a few grey levels.
    """
    scale = 255.0 / max(hi - lo, 1e-6)
    out = (np.asarray(frame, dtype=np.float32) - lo) * scale
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def dis_flow(dis: cv2.DISOpticalFlow, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow ``F_a->b`` (H, W, 2) float32 in pixels (x, y) with ``a(x) ~ b(x + F(x))``."""
    return dis.calc(a, b, None)


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return _grid_cached(int(shape[0]), int(shape[1]))


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid_cached(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    grid = _GRIDS.get((h, w))
    if grid is None:
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        if len(_GRIDS) > 8:
            _GRIDS.clear()
        grid = _GRIDS[(h, w)] = (gx, gy)
    return grid


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: ``out(x) = image(x + flow(x))``, bilinear, edges replicated.

    Parameters
    ----------
    image : numpy.ndarray, float32, shape (H, W) or (H, W, C)
    flow : numpy.ndarray, float32, shape (H, W, 2)
        Displacements (x, y) in pixels of ``image``'s grid.
    """
    gx, gy = _grid(flow.shape[:2])
    return cv2.remap(
        image,
        gx + flow[..., 0],
        gy + flow[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def compose(f_ab: np.ndarray, f_bc: np.ndarray) -> np.ndarray:
    """``F_a->c(x) = F_a->b(x) + F_b->c(x + F_a->b(x))`` (flows (H, W, 2) on one grid)."""
    return f_ab + warp(f_bc, f_ab)


def fb_error(f_ab: np.ndarray, f_ba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-backward inconsistency ``|F_a->b(x) + F_b->a(x + F_a->b(x))|`` (pixels).

    Returns
    -------
    error : numpy.ndarray, float32, shape (H, W)
    tolerance2 : numpy.ndarray, float32, shape (H, W)
        The relative part of the tolerance, ``0.01 (|F_a->b|^2 + |F_b->a(x + F)|^2)``.
    """
    back = warp(f_ba, f_ab)
    err = np.hypot(*np.moveaxis(f_ab + back, -1, 0))
    rel = _FB_RELATIVE * ((f_ab**2).sum(-1) + (back**2).sum(-1))
    return err.astype(np.float32), rel.astype(np.float32)


def resize_flow(flow: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A flow field resampled to ``shape`` (H, W), values rescaled to the new pixel size.

    Down-sampling averages (area), up-sampling is bilinear; both pixel-centre aligned.
    """
    h, w = flow.shape[:2]
    if (h, w) == tuple(shape):
        return flow
    interp = cv2.INTER_AREA if shape[0] < h else cv2.INTER_LINEAR
    out = cv2.resize(flow, (int(shape[1]), int(shape[0])), interpolation=interp)
    out[..., 0] *= shape[1] / w
    out[..., 1] *= shape[0] / h
    return out


def _in_frame(flow: np.ndarray) -> np.ndarray:
    """Whether ``x + flow(x)`` lands inside the frame (bool (H, W))."""
    h, w = flow.shape[:2]
    gx, gy = _grid((h, w))
    x = gx + flow[..., 0]
    y = gy + flow[..., 1]
    return (x > -0.5) & (x < w - 0.5) & (y > -0.5) & (y < h - 0.5)


# --------------------------------------------------------------------------------------------
# Noise and back-projection


def key_noise_sigma(hr_keys: np.ndarray, lr_at_keys: np.ndarray) -> float:
    """LR noise standard deviation measured at the key times (intensity units).

    The keys give the noise-free LR frames there, ``B(key)``; what the LR frames add to them is
    the noise (plus any mismatch of the camera model, which the back-projection should not put
    back either). Per key the residual's mean is removed (a brightness offset is not noise).
    """
    resid = np.asarray(lr_at_keys, dtype=np.float64) - bin_frames(hr_keys, SCALE)
    resid -= resid.mean(axis=(-2, -1), keepdims=True)
    return float(np.sqrt(np.mean(resid**2)))


def denoise_width(noise_sigma: float, noise_target: float) -> float:
    """Gaussian width (LR pixels) that leaves ``noise_target`` of white noise ``noise_sigma``.

    A 2-D Gaussian of standard deviation ``s`` scales white noise by ``1 / (2 sqrt(pi) s)``;
    returns 0 (no smoothing) when the noise is already below the target.
    """
    if noise_target <= 0:
        raise ValueError(f"noise_target must be > 0, got {noise_target!r}")
    width = noise_sigma / (2.0 * math.sqrt(math.pi) * noise_target)
    return 0.0 if width < 0.5 else float(width)


def _up(lr: np.ndarray) -> np.ndarray:
    """x4 bicubic up-sampling; OpenCV's equals
    :func:`~napari_xfusion.core.resample.upscale_bicubic` (to 3e-7, measured on
    random frames, edges included) at a sixth of the cost."""
    h, w = lr.shape
    return cv2.resize(lr, (SCALE * w, SCALE * h), interpolation=cv2.INTER_CUBIC)


def _bin(hr: np.ndarray) -> np.ndarray:
    """4x4 block means; OpenCV's area resize at an integer factor is exactly
    :func:`bin_frames` (to 2e-7) and 10x faster."""
    h, w = hr.shape
    return cv2.resize(hr, (w // SCALE, h // SCALE), interpolation=cv2.INTER_AREA)


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a 2-D float32 image by ``sigma`` pixels (0: unchanged), edges
    reflected."""
    return _gauss(np.asarray(image, dtype=np.float32), sigma)


def _gauss(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def back_project(
    frame: np.ndarray, lr: np.ndarray, iterations: int = 4, smoothing: float = 0.0
) -> np.ndarray:
    """Iterative back-projection: make the 4x4 block means of ``frame`` reproduce ``lr``.

    ``x <- x + up(G * (lr - B(x)))`` with ``up`` bicubic x4 and ``G`` a Gaussian of
    ``smoothing`` LR pixels (0: none).

    Parameters
    ----------
    frame : numpy.ndarray, float32, shape (4h, 4w)
    lr : numpy.ndarray, float32, shape (h, w)
    iterations : int
        Number of updates (>= 0).
    smoothing : float
        Width of ``G`` in LR pixels; with a noisy ``lr`` it keeps the shot noise out.
    """
    out = np.array(frame, dtype=np.float32, copy=True)
    lr = np.asarray(lr, dtype=np.float32)
    for _ in range(iterations):
        out += _up(_gauss(lr - _bin(out), smoothing))
    return out


# --------------------------------------------------------------------------------------------
# The stateful fuser


@dataclass
class KeyMotion:
    """The motion from a target time to one HR key, on the HR grid.

    Attributes
    ----------
    key : int
        LR time index of the key.
    flow : numpy.ndarray, float32, shape (H, W, 2)
        Selected flow ``t -> key`` (HR pixels): ``frame_t(x) ~ key(x + flow(x))``.
    confidence : numpy.ndarray, float32, shape (H, W)
        In [0, 1]; low where the flow is inconsistent or occluded.
    weight : float
        Normalised inverse temporal distance of the key (the two keys' weights sum to 1).
    chained : numpy.ndarray of bool, shape (H, W) on the flow grid
        Where the chained flow was selected over the direct one.
    """

    key: int
    flow: np.ndarray
    confidence: np.ndarray
    weight: float
    chained: np.ndarray


@dataclass(frozen=True)
class _Pair:
    """Per key pair: the 8-bit mapping and the noise handling (a cache key)."""

    lo: float
    hi: float
    denoise: float  # Gaussian width (LR pixels) for the correction and the residual (0: none)
    flow_width: float  # Gaussian width (LR pixels) applied to the frames DIS sees
    flow_noise_var: float  # noise variance left in those frames
    grid: int  # HR pixels per flow-grid pixel


class FlowFuser:
    """Fuses HR keys into the frame at any LR time along optical flow; keeps per-run caches.

    Parameters
    ----------
    preset : str
        DIS preset: ``"ultrafast"``, ``"fast"`` or ``"medium"``.
    consistency : float
        Forward-backward tolerance in HR pixels (> 0).
    photometric : float
        Tolerated local mismatch between the LR frame at t and the warped LR frame at the key,
        intensity units (> 0).
    bp_iterations : int
        Back-projection iterations (>= 0).
    noise_target : float
        Noise standard deviation (intensity) that the denoising and the back-projection
        residual are smoothed down to (> 0).
    max_chain : int
        Longest chain of consecutive flows (frames, >= 0; 0: direct flows only); bounds the
        memory of the chained flows to about ``2 max_chain`` LR-sized flow fields.

    Notes
    -----
    Call :meth:`fuse` for targets in time order to get each consecutive LR flow computed once;
    any order gives the same results (caches are keyed by frame index and key pair).
    """

    def __init__(
        self,
        preset: str = "fast",
        consistency: float = 1.0,
        photometric: float = 0.03,
        bp_iterations: int = 4,
        noise_target: float = 0.001,
        max_chain: int = 100,
    ) -> None:
        self._est = make_dis(preset)
        self.preset = preset
        # DIS estimates at its finest scale and up-samples the result; the flow bookkeeping runs
        # on that grid, so DIS gets the up-sampled frames already reduced to it (area average,
        # before the 8-bit quantisation) and returns the flow there: the same estimate without
        # building the fine pyramid levels and up- and down-sampling every flow.
        self.grid = 2 ** int(self._est.getFinestScale())
        self._est.setFinestScale(0)
        for name, value in (
            ("consistency", consistency),
            ("photometric", photometric),
            ("noise_target", noise_target),
        ):
            real = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not (real and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name, value in (("bp_iterations", bp_iterations), ("max_chain", max_chain)):
            integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if not (integral and value >= 0):
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        self.consistency = float(consistency)
        self.photometric = float(photometric)
        self.bp_iterations = int(bp_iterations)
        self.noise_target = float(noise_target)
        self.max_chain = int(max_chain)
        self.reset()

    def options(self) -> dict[str, float | int | str]:
        """The fuser's settings as JSON-serialisable values (export metadata, ``describe``)."""
        return {
            "preset": self.preset,
            "consistency": float(self.consistency),
            "photometric": float(self.photometric),
            "bp_iterations": int(self.bp_iterations),
            "noise_target": float(self.noise_target),
            "max_chain": int(self.max_chain),
        }

    def reset(self) -> None:
        """Forget every cached frame and flow."""
        self._images: OrderedDict[tuple[_Pair, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._pairs: OrderedDict[tuple[_Pair, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        # key -> (t, C_t->key, C_key->t) for chains forward in time (t > key)
        self._forward: dict[tuple[_Pair, int], tuple[int, np.ndarray, np.ndarray]] = {}
        # key -> {t: (C_t->key, C_key->t)} built backward from the key (t < key)
        self._backward: dict[tuple[_Pair, int], dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self._segments: dict[tuple[int, int], tuple] = {}
        self.flow_calls = 0  # DIS evaluations (tests and benchmarks count them)

    # ---- frames ------------------------------------------------------------------------

    def pair_params(self, hr_keys: np.ndarray, lr_at_keys: np.ndarray) -> _Pair:
        """The 8-bit mapping and denoising shared by every frame between two keys."""
        lo = float(min(np.percentile(f, 0.5) for f in lr_at_keys))
        hi = float(max(np.percentile(f, 99.5) for f in lr_at_keys))
        margin = 0.05 * max(hi - lo, 1e-3)  # room for brightness changes between the keys
        sigma = key_noise_sigma(hr_keys, lr_at_keys)
        width = denoise_width(sigma, self.noise_target)
        # DIS's frames: smoothed for a fixed noise level, whatever noise_target asks of the
        # fused frame (the flow needs texture more than it fears noise).
        flow_width = max(denoise_width(sigma, _FLOW_NOISE) * _FLOW_DENOISE, _FLOW_SMOOTHING)
        left = min(sigma, sigma / (2.0 * math.sqrt(math.pi) * flow_width))
        grid = self.grid
        hr_size = max(hr_keys.shape[-2:])
        while grid > 1 and hr_size // grid < _DIS_MIN_SIZE:  # tiny frames: a finer grid
            grid //= 2
        return _Pair(lo - margin, hi + margin, width, flow_width, left**2, grid)

    def _segment(
        self, keys: tuple[int, int], hr_keys: np.ndarray, lr_at_keys: np.ndarray
    ) -> tuple[_Pair, list[np.ndarray]]:
        """Pair parameters and the keys' detail ``key - Ud_key``, computed once per key pair.

        The cache is checked against the arrays (a comparison costs far less than the
        percentiles, the noise estimate and the up-sampling it saves)."""
        hit = self._segments.get(keys)
        if hit is not None:
            same_hr, same_lr, pair, details = hit
            if np.array_equal(same_lr, lr_at_keys) and np.array_equal(same_hr, hr_keys):
                return pair, details
        pair = self.pair_params(hr_keys, lr_at_keys)
        width = max(pair.denoise, _DETAIL_SMOOTHING)
        details = [
            np.asarray(hr_keys[j], dtype=np.float32) - _up(_gauss(lr_at_keys[j], width))
            for j in range(2)
        ]
        self._segments.clear()  # one key pair at a time (time order)
        self._segments[keys] = (np.array(hr_keys), np.array(lr_at_keys), pair, details)
        return pair, details

    def _frame(
        self, pair: _Pair, index: int, read_lr: Callable[[int], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(8-bit up-sampled smoothed frame on the flow grid for DIS, the smoothed LR frame)."""
        cache_key = (pair, index)
        hit = self._images.get(cache_key)
        if hit is not None:
            self._images.move_to_end(cache_key)
            return hit
        lr = _gauss(np.asarray(read_lr(index), dtype=np.float32), pair.flow_width)
        up = _up(lr)
        if pair.grid > 1:
            h, w = up.shape
            up = cv2.resize(up, (w // pair.grid, h // pair.grid), interpolation=cv2.INTER_AREA)
        item = (flow_image(up, pair.lo, pair.hi), lr)
        self._images[cache_key] = item
        if len(self._images) > 8:
            self._images.popitem(last=False)
        return item

    def _calc(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.flow_calls += 1
        return dis_flow(self._est, a, b)

    def _grid_flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """DIS flow ``a -> b`` (frames on the flow grid), in grid pixels."""
        return self._calc(a, b)

    def _consecutive(
        self, pair: _Pair, i: int, read_lr: Callable[[int], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(S_i->i+1, S_i+1->i)`` on the flow grid, computed once per run."""
        cache_key = (pair, i)
        hit = self._pairs.get(cache_key)
        if hit is not None:
            self._pairs.move_to_end(cache_key)
            return hit
        a = self._frame(pair, i, read_lr)[0]
        b = self._frame(pair, i + 1, read_lr)[0]
        item = (self._grid_flow(a, b), self._grid_flow(b, a))
        self._pairs[cache_key] = item
        # A segment's pairs are used twice (the backward chain at its start, the forward chain
        # through it): keep a whole chain's worth.
        if len(self._pairs) > self.max_chain + 4:
            self._pairs.popitem(last=False)
        return item

    # ---- chains ------------------------------------------------------------------------

    def _chain(
        self, pair: _Pair, t: int, key: int, read_lr: Callable[[int], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Chained ``(F_t->key, F_key->t)`` on the flow grid, or None beyond ``max_chain``."""
        if abs(t - key) > self.max_chain or abs(t - key) < 2:
            return None  # adjacent frames: the chain is the direct flow
        cache_key = (pair, key)
        if t > key:
            state = self._forward.get(cache_key)
            if state is None or state[0] > t:
                state = None
            if state is None:
                s_fwd, s_bwd = self._consecutive(pair, key, read_lr)
                state = (key + 1, s_bwd, s_fwd)
            last, to_key, from_key = state
            while last < t:  # advance one frame: C_t->k = S_t->t-1 (+) C_t-1->k
                s_fwd, s_bwd = self._consecutive(pair, last, read_lr)  # S_last->last+1 & back
                to_key = compose(s_bwd, to_key)
                from_key = compose(from_key, s_fwd)
                last += 1
            self._forward[cache_key] = (t, to_key, from_key)
            return to_key, from_key
        table = self._backward.setdefault(cache_key, {})
        for old in [u for u in table if u < t]:  # time-ordered: earlier targets are done
            del table[old]
        if t not in table:
            start = min(table, default=None)
            if start is None:
                s_fwd, s_bwd = self._consecutive(pair, key - 1, read_lr)
                start = key - 1
                table[start] = (s_fwd, s_bwd)
            to_key, from_key = table[start]
            for u in range(start - 1, t - 1, -1):  # C_u->k = S_u->u+1 (+) C_u+1->k
                s_fwd, s_bwd = self._consecutive(pair, u, read_lr)
                to_key = compose(s_fwd, to_key)
                from_key = compose(from_key, s_bwd)
                table[u] = (to_key, from_key)
        return table[t]

    def _forget_other_keys(self, keys: tuple[int, int]) -> None:
        for store in (self._forward, self._backward):
            for cache_key in [c for c in store if c[1] not in keys]:
                del store[cache_key]

    # ---- motion and fusion ---------------------------------------------------------------

    def _cost(
        self,
        pair: _Pair,
        to_key: np.ndarray,
        from_key: np.ndarray,
        v_t: np.ndarray,
        v_k: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel (forward-backward, photometric) cost of one candidate flow (flow grid)."""
        err, rel = fb_error(to_key, from_key)
        g2 = float(pair.grid**2)
        tol2 = self.consistency**2 + rel * g2
        fb = (err**2) * g2 / tol2
        diff = v_t - warp(v_k, to_key)
        diff -= _gauss(diff, 4.0)  # brightness changes are not motion errors
        # The Gaussian weighs about 4 LR pixels: the mismatch of a local patch, not of a pixel.
        mismatch = _gauss(diff * diff, 1.0) - 2.0 * pair.flow_noise_var
        photo = np.maximum(mismatch, 0.0) / self.photometric**2
        photo[~_in_frame(to_key)] = np.inf
        return fb, photo

    def motion(
        self,
        t: int,
        keys: tuple[int, int],
        hr_keys: np.ndarray,
        lr_at_keys: np.ndarray,
        read_lr: Callable[[int], np.ndarray] | None,
        lr_t: np.ndarray | None = None,
        pair: _Pair | None = None,
    ) -> list[KeyMotion]:
        """Flow from ``t`` to each key, with its confidence.

        Parameters
        ----------
        t : int
            Target LR time.
        keys : (int, int)
            LR times of the two keys.
        hr_keys : numpy.ndarray, float32, shape (2, H, W)
        lr_at_keys : numpy.ndarray, float32, shape (2, h, w)
        read_lr : callable or None
            Normalised LR frame (h, w) at any index; None: direct flows only (no frames in
            between are available).
        lr_t : numpy.ndarray, shape (h, w), optional
            The LR frame at t when ``read_lr`` is None.
        pair : optional
            :meth:`pair_params` of the keys (computed when not given).

        Returns
        -------
        list of KeyMotion
            One per key, in the order of ``keys``.
        """
        if pair is None:
            pair = self.pair_params(hr_keys, lr_at_keys)
        known = {int(keys[0]): lr_at_keys[0], int(keys[1]): lr_at_keys[1]}
        if lr_t is not None:
            known[int(t)] = lr_t

        def read(i: int) -> np.ndarray:
            if i in known:
                return known[i]
            if read_lr is None:
                raise ValueError(f"LR frame {i} is needed but no LR reader was given")
            return read_lr(i)

        self._forget_other_keys(keys)
        img_t, v_t = self._frame(pair, t, read)
        h, w = (n * SCALE for n in v_t.shape)  # HR
        distances = [abs(t - k) for k in keys]
        inverse = [1.0 / max(d, _EPS) for d in distances]
        out = []
        for j, key in enumerate(keys):
            img_k, v_k = self._frame(pair, key, read)
            g = pair.grid
            v_tg, v_kg = (cv2.resize(v, (w // g, h // g)) if g != SCALE else v for v in (v_t, v_k))
            direct = (self._grid_flow(img_t, img_k), self._grid_flow(img_k, img_t))
            candidates = [direct]
            chain = self._chain(pair, t, key, read) if read_lr is not None else None
            if chain is not None:
                candidates.append(chain)
            parts = [self._cost(pair, *c, v_tg, v_kg) for c in candidates]
            costs = [fb + photo for fb, photo in parts]
            # No motion is a candidate too: where the scene stands still, DIS on noisy or flat
            # frames still returns some flow, and warping along it only blurs the key. But
            # where the LR frames are flat and the flow is consistent (a pan over texture the
            # LR cannot see), DIS's flow, carried in from the textured surroundings, is right
            # and "no motion" only looks as good: there it pays for contradicting the
            # consistent flow, in proportion to that flow's forward-backward confidence.
            fb_best = np.minimum.reduce([fb for fb, _ in parts])
            support = np.exp(-0.5 * fb_best)
            step = np.hypot(*np.moveaxis(direct[0], -1, 0)) * g / self.consistency
            zero_flow = np.zeros_like(direct[0])
            _, still_photo = self._cost(pair, zero_flow, zero_flow, v_tg, v_kg)
            excess = np.maximum(step - _STILL_FREE, 0.0)
            still = still_photo + support * np.minimum(excess**2, _STILL_CAP)
            still[still > _STILL_MAX_COST] = np.inf
            costs.append(still)
            candidates.append((zero_flow, zero_flow))
            costs = np.stack(costs)
            source = np.argmin(costs, axis=0)
            cost = np.take_along_axis(costs, source[None], axis=0)[0]
            flow = np.take_along_axis(
                np.stack([c[0] for c in candidates]), source[None, ..., None], axis=0
            )[0]
            chained_mask = source == 1 if chain is not None else np.zeros(cost.shape, bool)
            conf = np.exp(-0.5 * cost).astype(np.float32)
            out.append(
                KeyMotion(
                    key=int(key),
                    flow=resize_flow(flow, (h, w)),
                    confidence=np.clip(cv2.resize(conf, (w, h)), 0.0, 1.0),
                    weight=inverse[j] / sum(inverse),
                    chained=chained_mask,
                )
            )
        return out

    def fuse(
        self,
        t: int,
        keys: tuple[int, int],
        lr_t: np.ndarray,
        hr_keys: np.ndarray,
        lr_at_keys: np.ndarray,
        read_lr: Callable[[int], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The HR frame at ``t`` and its confidence.

        Parameters
        ----------
        t : int
            Target LR time.
        keys : (int, int)
            LR times of the two HR keys.
        lr_t : numpy.ndarray, float32, shape (h, w)
            LR frame at t, in [0, 1].
        hr_keys : numpy.ndarray, float32, shape (2, 4h, 4w)
            The HR keys at ``keys``.
        lr_at_keys : numpy.ndarray, float32, shape (2, h, w)
            The LR frames at ``keys``.
        read_lr : callable, optional
            Normalised LR frame at any index (for the chained flows); None: direct flows only.

        Returns
        -------
        frame : numpy.ndarray, float32, shape (4h, 4w)
        confidence : numpy.ndarray, float32, shape (4h, 4w), in [0, 1]
        """
        lr_t = np.asarray(lr_t, dtype=np.float32)
        for j, key in enumerate(keys):
            if t == key:
                frame = np.array(hr_keys[j], dtype=np.float32, copy=True)
                return frame, np.ones(frame.shape, dtype=np.float32)
        keys = (int(keys[0]), int(keys[1]))
        pair, details = self._segment(keys, hr_keys, lr_at_keys)
        motions = self.motion(t, keys, hr_keys, lr_at_keys, read_lr, lr_t=lr_t, pair=pair)
        up_t = _up(lr_t)
        smooth_t = _up(_gauss(lr_t, max(pair.denoise, _DETAIL_SMOOTHING)))
        detail = np.zeros_like(up_t)
        weights = np.zeros_like(up_t)
        miss = np.ones_like(up_t)  # prod_k (1 - conf_k)
        for j, m in enumerate(motions):
            w_k = m.confidence * m.weight
            detail += w_k * warp(details[j], m.flow)
            weights += w_k
            miss *= 1.0 - m.confidence
        conf = 1.0 - miss
        detail /= np.maximum(weights, _EPS)
        # Trusted: denoised LR + key detail; untrusted: the bicubic frame itself.
        frame = up_t + conf * (smooth_t + detail - up_t)
        frame = back_project(frame, lr_t, self.bp_iterations, pair.denoise)
        return frame, np.clip(conf, 0.0, 1.0).astype(np.float32)
