"""The stateful :class:`FlowFuser`: candidate flows (direct, chained, none), their selection
per pixel, the blend of the keys' detail and the back-projection.

The model is in :mod:`napari_xfusion.core.flow`.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from collections.abc import Callable

import cv2
import numpy as np

from napari_xfusion.core.degrade import SCALE
from napari_xfusion.core.flow.backproject import (
    _gauss,
    _up,
    back_project,
    denoise_width,
    key_noise_sigma,
)
from napari_xfusion.core.flow.primitives import (
    _in_frame,
    compose,
    dis_flow,
    fb_error,
    flow_image,
    make_dis,
    resize_flow,
    warp,
)
from napari_xfusion.core.flow.records import (
    _DETAIL_SMOOTHING,
    _DIS_MIN_SIZE,
    _EPS,
    _FLOW_DENOISE,
    _FLOW_NOISE,
    _FLOW_SMOOTHING,
    _STILL_CAP,
    _STILL_FREE,
    _STILL_MAX_COST,
    KeyMotion,
    _Pair,
)


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
