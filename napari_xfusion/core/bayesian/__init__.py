"""Bayesian spatio-temporal fusion after Xue, Leung & Fung (2017): the maths, in plain numpy.

Xue, J., Leung, Y., Fung, T. (2017). A Bayesian data fusion approach to spatio-temporal fusion of
remotely sensed images. Remote Sensing 9(12), 1310.

Symbols (Xue et al.'s, adapted to one grey channel): ``x`` a high-resolution (HR) image, ``y`` a
low-resolution (LR) image, ``t_b``/``t_a`` the times of the HR key frames before/after the target
time ``t``, ``z = [x(t_b), x(t), x(t_a)]`` the pixel time series, ``o = (t_b, t_a)`` its observed
part. ``B`` is the 4x4 block mean, ``j`` an LR pixel and ``i`` one of its 16 HR pixels.
``(w_b, w_a) = ((t_a - t), (t - t_b)) / (t_a - t_b)`` are the linear-in-time weights of the keys
(clamped to [0, 1]).

1. Degradation (observation) model, calibrated per key pair on the HR/LR pairs at the key times::

       y_j = a B(x)_j + b + e_j,   e_j ~ N(0, sigma_j^2),   sigma_j^2 = sigma0^2 + kappa q_j

   ``a``, ``b`` by least squares over both pairs; ``q = a B(x) + b`` is the noise-free LR level.
   *Choice*: the noise variance depends on the level (photon shot noise, ``kappa``, plus a
   floor, ``sigma0^2``), fitted by least squares of the squared residuals on ``q``. A single
   ``sigma^2`` overstates the noise of dark pixels and understates that of bright ones, which
   at 20 dB LR PSNR inflates the class variances of bright classes several times. The
   calibrated LR frame ``y~ = (y - b) / a`` estimates ``B(x)`` with noise variance
   ``s2_j = sigma_j^2 / a^2``, at t evaluated at the keys' level ``q_j = a p_j + b`` (``p``
   below). (Degenerate fit, flat keys or ``a < 0.05``: ``a = 1``.)
2. Block-level series and classes. Per LR pixel the series ``z~_j = [B(x(t_b))_j, y~_j(t),
   B(x(t_a))_j]``. *Choice*: at the key times the block means are known exactly from the HR
   keys, so they replace the LR frames there (the paper's series uses the LR frames at the key
   times; they only add noise to what the keys give). K-means (by the caller, see
   :mod:`napari_xfusion.methods.bayesian`) runs on the features ``f_j = [B(x(t_b))_j,
   p_j + g (y~_j(t) - p_j), B(x(t_a))_j]``, ``p = w_b B(x(t_b)) + w_a B(x(t_a))``, where ``g =
   max(0, 1 - mean_j s2_j / mean_j (y~_j(t) - p_j)^2)`` is a Wiener factor: the LR frame at t steers
   the classes as far as it carries signal rather than noise. (With ``g = 1`` at high noise,
   K-means splits pixels by the sign of their noise at t, and the class means at t, biased by
   that selection, pass the noise into the prediction at full weight.)
   Per class ``c``: mean ``mu_c`` and ML covariance ``C_c`` of ``z~``, shrunk towards the
   pooled covariance ``C_g`` with ``n0`` pseudo-pixels, ``(n_c C_c + n0 C_g) / (n_c + n0)``
   (tiny classes stay usable), and corrected for the LR noise at t: ``S_c = C_c - s2_c e_t
   e_t^T`` (``s2_c`` the class's mean ``s2_j``, shrunk alike) projected onto the positive
   semi-definite cone.
3. HR classes: each HR pixel takes the class whose feature mean (the centroid) is nearest
   (Euclidean) to ``[x_i(t_b), p_i + g (y~_j(t) - p_j), x_i(t_a)]``, ``p_i = w_b x_i(t_b) +
   w_a x_i(t_a)``: its own keys, so class boundaries follow HR edges, not the 4x4 grid.
4. Prediction, the Gaussian conditional of ``x_i(t)`` given the HR keys ``x_o,i`` (Xue et al.'s
   temporal prediction), with the regression weights ``beta = S_to S_oo^-1`` regularised::

       beta    = beta0 + (S_oo + lambda I)^-1 (S_ot - S_oo beta0)
       mu_p,i  = mu_t + beta (x_o,i - mu_o)
       var_p,i = S_tt - 2 beta S_ot + beta S_oo beta^T        (class of pixel i)

   *Choice*: a Gaussian prior on ``beta`` centred on linear interpolation, ``beta0 = (w_b,
   w_a)``, as strong as the LR noise, ``lambda = s2_c``. With ``lambda = 0`` this is the plain
   conditional (``var_p = S_tt - S_to S_oo^-1 S_ot``); the prior matters for classes whose
   keys vary less than the noise, which the plain conditional would flatten to the class mean.
   The statistics are of block means and are applied to HR pixels (the paper's assumption).
5. Update, a linear Kalman step with the LR frame at ``t`` through ``y~_j = B(x)_j + e_j / a``
   (noise variance ``s2_j``).
   Blocks do not overlap, so it is closed form per LR pixel ``j`` over its 16 HR pixels.
   *Choice*: the prior covariance ``P`` of the 16 prediction errors of a block (diagonal
   ``var_p,i``):

   - ``"correlated"`` (default): ``P_ik = sd_i sd_k``, ``sd = sqrt(var_p)``: prediction errors
     of neighbouring pixels move together (a displaced edge), and a block of one class has the
     block-level variance ``var_p`` that step 2 estimated. With ``m_j = mean_k sd_k``::

         x_i   = mu_p,i + sd_i m_j (y~_j(t) - mean_k mu_p,k) / (m_j^2 + s2_j)
         var_i = var_p,i s2_j / (m_j^2 + s2_j)

   - ``"independent"``: ``P = diag(var_p)``, the textbook per-pixel choice::

         x_i   = mu_p,i + (var_p,i / 16) (y~_j(t) - mean_k mu_p,k) / (sum_k var_p,k / 256 + s2_j)
         var_i = var_p,i - (var_p,i / 16)^2 / (sum_k var_p,k / 256 + s2_j)

   Either way the block's residual goes to its pixels in proportion to their uncertainty (sd or
   variance): well-predicted classes (static background) hardly move, classes that change
   between the keys take the correction. ``var_i`` is the posterior variance map (HR intensity
   units squared). On the simulated 400x1024 sample with clean HR truth (key step 10, targets
   2, 5, 8) the correlated prior gave 37.5 / 38.9 dB at 40 / 60 dB LR PSNR against 36.2 /
   37.7 dB for the independent one, which was ahead only at 20 dB (31.5 against 31.3 dB).

0. Motion (``prior="motion"``, the default). The temporal prior above assumes a pixel keeps
   its place between the keys; on real motion that prediction is wrong wherever something
   moves, and the method lost 3-5 dB to bicubic on translating natural images. So, before step
   2, each key is *warped to t* along the optical flow of :mod:`napari_xfusion.core.flow`
   (DIS flow on the up-sampled LR frames, direct or chained per pixel, with a confidence
   ``c_k,i`` in [0, 1] from forward-backward and photometric consistency), and ``x(t_b)``,
   ``x(t_a)`` in steps 2-5 stand for the warped keys ``x^_k``. Where a warped key cannot be
   trusted it is replaced, in proportion to its distrust, by the best other guess ``g_i``
   (the confidence-weighted mean of the warped keys, and where neither is trusted the
   up-sampled calibrated LR frame at t, ``up(y~(t))``)::

       x'_k,i = c_k,i x^_k,i + (1 - c_k,i) g_i
       var_p,i <- var_p,i + e_i,   e_i = (1 - c_i) v_up,   c_i = 1 - prod_k (1 - c_k,i)
       var_i   <- var_i + e_i                                  (after step 5)

   ``v_up = mean (x(t_k) - up(B x(t_k)))^2`` over the keys is the error variance of the
   up-sampled LR frame (the detail bicubic cannot give): where no key is trusted the prior is
   as uncertain as bicubic and the update leans on the LR evidence; the posterior variance
   keeps ``e_i``, because that error is detail within the blocks, which the LR frame does not
   observe (its update only fixes the block means). The fallback ``up(y~(t))`` is smoothed to
   a noise level of 0.008 first (:func:`napari_xfusion.core.flow.denoise_width`), so it does
   not carry shot noise into the prior's detail. The calibration (step 1) stays on the
   unwarped key pairs, which are what the LR frames at the key times saw. ``prior="static"``
   is the model without this step (the paper's).

At a key time the HR frame is observed: the method returns the key with zero variance (the
maths above, given ``w = (1, 0)``, returns it up to the LR noise at t it still lets in). HR keys
are treated as exact (no HR noise term); the LR frames at ``t -+ s`` are not used.
"""

from __future__ import annotations

from napari_xfusion.core.bayesian.classes import (
    assign_hr_classes,
    block_series,
    class_statistics,
    cluster_features,
    conditional_model,
    feature_weight,
    noise_map,
)
from napari_xfusion.core.bayesian.model import (
    SCALE,
    BlockPrior,  # noqa: F401 (public, imported by methods.bayesian)
    ClassStatistics,
    Degradation,
    FusionResult,
    KeyPair,
    TemporalPrior,  # noqa: F401 (public, imported by methods.bayesian)
    calibrate,
    default_n_classes,
    interpolation_weights,
    prepare_keys,
)
from napari_xfusion.core.bayesian.prior import motion_keys, upsampling_error_var
from napari_xfusion.core.bayesian.solve import fuse_window

__all__ = [
    "SCALE",
    "Degradation",
    "KeyPair",
    "ClassStatistics",
    "FusionResult",
    "default_n_classes",
    "interpolation_weights",
    "calibrate",
    "prepare_keys",
    "block_series",
    "noise_map",
    "feature_weight",
    "cluster_features",
    "class_statistics",
    "conditional_model",
    "assign_hr_classes",
    "upsampling_error_var",
    "motion_keys",
    "fuse_window",
]
