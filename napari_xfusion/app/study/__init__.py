"""The paper's study as one run: sweeps of LR noise, HR key step and LR separation over every
method, on the same target frames, through the shared pipeline; resumable.

What is swept (defaults = the paper's figures)
----------------------------------------------
- **noise** (Fig. 5): target LR PSNR 20, 30, 40, 50, 60 dB and noise-free, at s = 1, k = 20;
- **keys** (Figs 6, S3, S4): HR key step 2, 10, 20 and first-and-last only, for s = 1, 2, 3,
  at :attr:`StudyConfig.key_lr_psnr` (default noise-free).

A setting (key rule, s, LR PSNR) that belongs to both sweeps (k = 20, s = 1, clean) is run
once. Each setting is one :class:`~napari_xfusion.app.config.RunConfig` with ``simulate=True``
(LR = 4x4 binning of the truth, seeded shot noise at the target PSNR) run by
:func:`~napari_xfusion.app.inputs.prepare_inputs` and :func:`~napari_xfusion.app.job.run_job`:
windows, normalisation and metrics are the pipeline's, nothing is re-implemented here.

Inputs
------
``truth``: a full-rate HR stack (any TIFF the reader takes), normalised once by the pipeline's
rule (:func:`~napari_xfusion.app.inputs.fit_stream`: used as is when float in [0, 1], else
percentile clip values on an evenly spaced sample), so every setting sees the same truth and,
at the same noise level, the same LR stream. ``None``: the built-in simulated sample,
:func:`napari_xfusion.core.sample.simulate_sequence` with ``sample_frames=101``,
``sample_shape=(400, 1024)``, ``sample_seed=20260`` (a held-out seed: training uses seeds
>= 1,000,000; the README's model table uses it too), ``sample_noise=False`` (no HR detector
noise in the truth, like the benchmarks). 101 frames put a key on the last frame for k = 2, 10
and 20.

Target frames
-------------
The same frames for every method *and every setting* (so settings compare on the same frames
and bicubic, which ignores the keys, is exactly flat across key steps): the candidates are the
frames that are not an HR key in any setting and lie between the first and the last key of
every setting; ``targets_per_setting`` of them are taken evenly spaced (first and last
candidate included; None = all). On the default sample they are odd frames 1..99.

Outputs (``out_dir``)
---------------------
``study.json`` (the :class:`StudyConfig`), ``runs/<setting>.json`` (each setting's
RunConfig), ``frames.csv`` (one row per method, setting and frame: :data:`COLUMNS`), and once
every setting is done the figures and ``summary.md`` (:mod:`napari_xfusion.app.study_plots`).
``frames.csv`` is rewritten atomically after every setting and when the run stops (Ctrl-C,
an error, a closed generator), so the rows done are kept; a rerun with the same configuration
skips them. A different configuration refuses to mix with old rows (the message names the
fields that differ); ``device`` may differ between runs.

From a GUI: :func:`iter_study` is a generator of :class:`StudyProgress` events (close it to
cancel; the rows done are saved); :func:`run_study` takes a ``cancel`` callable.

Modules: :mod:`.config` (:class:`StudyConfig`, :class:`Setting`), :mod:`.targets` (settings,
target frames, truth), :mod:`.rows` (``frames.csv``), :mod:`.runner` (:func:`iter_study`,
:func:`run_study`, :func:`report_study`), :mod:`.stats`, :mod:`.figures` and :mod:`.summary`
(the report).
"""

from __future__ import annotations

from napari_xfusion.app.study.config import (
    FIRST_LAST,
    STUDY_VERSION,
    Setting,
    StudyConfig,
    StudyError,
)
from napari_xfusion.app.study.rows import COLUMNS, read_rows
from napari_xfusion.app.study.runner import (
    StudyProgress,
    StudyResult,
    iter_study,
    report_study,
    run_study,
)
from napari_xfusion.app.study.targets import (
    default_methods,
    describe_truth,
    load_truth,
    study_settings,
    study_targets,
    truth_frames,
)

__all__ = [
    "COLUMNS",
    "FIRST_LAST",
    "STUDY_VERSION",
    "Setting",
    "StudyConfig",
    "StudyError",
    "StudyProgress",
    "StudyResult",
    "default_methods",
    "iter_study",
    "load_truth",
    "read_rows",
    "report_study",
    "run_study",
    "study_settings",
    "study_targets",
    "truth_frames",
    "describe_truth",
]
