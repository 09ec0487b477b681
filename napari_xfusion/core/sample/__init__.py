"""A simulated high-speed x-ray radiography sequence of laser powder-bed fusion (LPBF).

The sample is the project's ground truth for tests, training and demos: a ``(T, H, W)`` float32
stack in [0, 1], generated on demand from a seed at any size, standing for the **HR** camera
recording at the **LR** frame rate (one frame per LR time). Degrading it to the LR stream and
picking HR key frames is :mod:`napari_xfusion.core.degrade`'s job, not this module's.

What is modelled (side view: the x-ray beam crosses a thin plate along its thickness; image x
is the laser scan direction, image y points down into the metal; HR pixel = 2 um by default)
----------------------------------------------------------------------------------------------
- **Plate**: a metal plate of constant thickness along the beam (200 um) below a flat top
  surface at 30 % of the frame height; above it gas.
- **Powder bed**: a ~50 um layer of spherical powder particles (radii ~8..25 um, ~50 %
  packing) on the surface, rendered as summed sphere chords, so it has a granular texture. The
  laser **denudes** it: particles disappear as the keyhole passes them (a few stay: powder off
  the track along the beam).
- **Keyhole**: a vapour depression that moves along +x at a constant scan speed (5 px/frame by
  default, ~0.5 m/s at 50 kfps), deepens over the first part of the sequence, fluctuates in
  depth, radius and tilt (a sum of random sinusoids plus occasional partial collapses), with a
  funnel-shaped mouth, a rounded tip, a backward-tilted centre line and travelling wall
  ripples. Its projected void is the chord of a circular cross-section.
- **Melt pool**: a liquid region (7 % less dense than solid) around and far behind the keyhole
  with a half-ellipse boundary that fluctuates with the keyhole, so its boundary shows faintly;
  behind it the solidified **track bead** stands above the original surface.
- **Pores**: gas pores born at the keyhole tip, carried backward by the melt flow on a
  swirling path, and **trapped** (frozen in place) once the solidification front passes them.
  Some are born before the first frame, so the sequence can start with trapped pores.
- **Spatter**: hot droplets ejected from the keyhole mouth, mostly backward, at ~1..30
  px/frame (log-normal around 5: a good fraction faster than 4 px = one LR pixel per frame),
  and cold powder particles picked up from the bed near the keyhole by the vapour-driven gas
  flow (1..3 px/frame, drawn towards the keyhole). Both fly ballistically (gravity bends a
  track by ~10 px over 100 frames); some are already in flight at the first frame.
- **Contrast**: Beer-Lambert transmission ``exp(-mu * t)`` of the projected metal thickness
  ``t`` (``mu`` = 5 /mm, roughly Ti-6Al-4V at ~25 keV), a small isotropic blur (source size /
  detector PSF), and propagation phase contrast as the transport-of-intensity first-order term
  ``1 + z * delta * laplacian(t)`` (bright/dark edge fringes).
- **Detector**: a static multiplicative flat field (beam profile, scintillator grain, dust
  spots; the same every frame) and photon shot noise (Gaussian approximation of Poisson noise,
  ``photons`` detected photons at unit intensity; optional, from its own seeded stream so the
  noisy and noise-free versions of a seed show the same scene).
- **Normalisation**: as the project's data convention: clip at the 0.35th and 99.65th
  percentiles of the noise-free stack (estimated on every ``T // 25``-th frame), then scale to
  [0, 1].

The keyhole passes the frame centre mid-sequence (or starts at 10 % of the width and leaves on
the right when the scan is too long to fit), so the default 100 frames sweep it across the
middle half of the frame.

What is not modelled
--------------------
Real 3-D melt flow (Marangoni convection, the pores' path is a kinematic model), the vapour
plume, powder sucked into the melt, spatter landing and coalescence, motion blur within
an exposure, scintillator afterglow, polychromatic beam hardening, detector read noise and
dead pixels, and heat-induced density changes of the solid. Feature sizes are physical (um
converted with ``pixel_size_um``), so a small frame shows a small field of view, not a scaled
down scene; at very small frames the keyhole depth is capped to the plate height.

Everything random is drawn from generators seeded by ``seed`` (``numpy.random.SeedSequence``
children, one per component), so a seed always gives the same sequence.
"""

from __future__ import annotations

from napari_xfusion.core.sample.render import SampleState, simulate_sequence

__all__ = ["SampleState", "simulate_sequence"]
