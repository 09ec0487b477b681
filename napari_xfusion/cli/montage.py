"""The demo's montage: one frame of every method next to LR and the truth, as a PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["write_montage"]


def write_montage(
    out_path: Path, paths: dict[str, Path], fused: dict[str, Path], key_step: int
) -> Path:
    """PNG of one frame half-way between two HR keys: LR (x4, nearest), each fused method and
    the truth, above their frame-to-frame ratio I[t] / I[t-1] (the paper's Fig. 3 view)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_xfusion.core.io import read_stack

    truth = read_stack(paths["truth"])
    t = min(key_step // 2 or 1, len(truth) - 1)
    lr = read_stack(paths["lr"])
    panels = {"LR (x4 nearest)": np.kron(lr[t - 1 : t + 1], np.ones((1, 4, 4), np.float32))}
    for method, path in fused.items():
        panels[method] = read_stack(path)[t - 1 : t + 1]
    panels["truth"] = truth[t - 1 : t + 1]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
    for column, (title, pair) in enumerate(panels.items()):
        pair = np.asarray(pair, dtype=np.float32)
        axes[0, column].imshow(pair[1], cmap="gray", vmin=0.0, vmax=1.0)
        axes[0, column].set_title(title, fontsize=9)
        ratio = pair[1] / np.maximum(pair[0], 1e-3)
        axes[1, column].imshow(ratio, cmap="gray", vmin=0.7, vmax=1.3)
        axes[1, column].set_title(f"I[{t}] / I[{t - 1}]", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"frame {t} (HR keys every {key_step} frames)", fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_path)  # atomic, like every export
    return out_path
