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

from napari_xfusion.core.degrade import SCALE
from napari_xfusion.core.flow.backproject import (
    back_project,
    denoise_width,
    gaussian,
    key_noise_sigma,
)
from napari_xfusion.core.flow.fuser import FlowFuser
from napari_xfusion.core.flow.primitives import (
    PRESETS,
    compose,
    dis_flow,
    fb_error,
    flow_image,
    make_dis,
    resize_flow,
    warp,
)
from napari_xfusion.core.flow.records import KeyMotion

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
