"""Render a few frames of the simulated x-ray sample and their frame-to-frame ratio to a PNG.

The top row shows HR frames of the default sample (400 x 1024 px at 2 um/px); the bottom row
the ratio I_t / I_(t-1) of each frame to the one before it, as in Fig. 3 of the EDVR-STF paper:
static structure (plate, flat field) cancels to 1 and only what moved between two frames (the
keyhole walls, spatter, pores, the melt-pool boundary) stands out.

Usage::

    python examples/render_sample.py [--seed 0] [-o docs/images/sample.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from napari_xfusion.core.sample import simulate_sequence  # noqa: E402

FRAMES = (10, 40, 70)


def render(seed: int, output: Path, n_frames: int = 80) -> None:
    """Simulate the default sample and write the figure to ``output``."""
    frames, state = simulate_sequence(n_frames=n_frames, seed=seed, return_state=True)
    um = state.pixel_size_um
    height, width = frames.shape[1:]
    extent = (0, width * um / 1000, height * um / 1000, 0)  # mm
    fig, axes = plt.subplots(len(FRAMES), 2, figsize=(13, 2.9 * len(FRAMES)), layout="constrained")
    for row, t in enumerate(FRAMES):
        axes[row, 0].imshow(frames[t], cmap="gray", vmin=0, vmax=1, extent=extent)
        axes[row, 0].set_title(f"frame {t}")
        ratio = (frames[t] + 0.02) / (frames[t - 1] + 0.02)  # offset: avoid 0/0 in clipped pixels
        image = axes[row, 1].imshow(ratio, cmap="gray", vmin=0.7, vmax=1.3, extent=extent)
        axes[row, 1].set_title(f"I({t}) / I({t - 1})")
        axes[row, 0].set_ylabel("y (mm)")
    for ax in axes[-1]:
        ax.set_xlabel("x (mm)")
    fig.colorbar(image, ax=axes[:, 1], shrink=0.5, label="ratio")
    fig.suptitle(f"simulated LPBF keyhole radiograph, seed {seed}, {um:g} um/px")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=64)
    print(f"wrote {output} ({output.stat().st_size / 1024:.0f} kB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images/sample.png"))
    args = parser.parse_args()
    render(args.seed, args.output)


if __name__ == "__main__":
    main()
