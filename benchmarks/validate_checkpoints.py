"""Score checkpoints on a training config's validation set, as the training loop does.

The same :class:`napari_xfusion.train.loop.Validator` the run logs to ``log.csv`` (median PSNR /
SSIM on the simulator at the config's validation seed and, when the config has them, on its
real-motion validation sequences), so shipped weights and a new run compare on the same frames::

    python benchmarks/validate_checkpoints.py \
        --config napari_xfusion/train/configs/real-motion-small.yaml \
        resources/weights/edvr-stf-small.pt runs/real-motion-small/edvr-stf-small/model_latest.pt
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="training YAML whose val section is used")
    p.add_argument("checkpoints", nargs="+", help="nn.checkpoint files")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)

    import torch

    from napari_xfusion.nn.checkpoint import load_model
    from napari_xfusion.train.config import load_config
    from napari_xfusion.train.loop import Validator

    torch.set_num_threads(args.threads)
    validator = Validator(load_config(args.config).val)
    print("| checkpoint | simulator PSNR | SSIM | real-motion PSNR | SSIM |")
    print("|---|---:|---:|---:|---:|")
    for path in args.checkpoints:
        scores = validator(load_model(path).eval(), torch.device("cpu"))
        real = [scores.get("real_psnr"), scores.get("real_ssim")]
        cells = [f"{v:.2f}" if i == 0 else f"{v:.4f}" for i, v in enumerate(real) if v is not None]
        print(
            f"| {path} | {scores['psnr']:.2f} | {scores['ssim']:.4f} | "
            + (" | ".join(cells) if cells else "- | -")
            + " |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
