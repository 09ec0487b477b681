"""``torchrun`` support for ``xfusion fuse``: ranks, and rank 0 assembling one file per method."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari_xfusion.app.results import ResultTable

__all__ = ["assemble", "distributed"]


def distributed() -> tuple[int, int]:
    """``(rank, world_size)`` under torchrun, ``(0, 1)`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size()


def assemble(
    methods: list[str],
    parts: dict[str, Path],
    outputs: dict[str, Path],
    table: ResultTable,
    interrupted: bool,
    rank: int,
    world: int,
) -> dict[str, int]:
    """torchrun: rank 0 writes every rank's frames into one file per method, in time order.

    Ranks send their frames one at a time as raw bytes (bounded memory, any dtype, no shared
    file system needed) and their per-frame rows as objects; rank 0's ``table`` ends up with
    every rank's rows. When any rank was interrupted the result is marked incomplete and
    goes to ``<stem>.partial.tif``.
    """
    import torch
    import torch.distributed as dist

    from napari_xfusion.app.export import partial_path
    from napari_xfusion.core.io import StackWriter, read_metadata, read_stack

    done: dict[str, int] = {}
    for m in methods:
        mine = table.rows(m)
        gathered: list[Any] = [None] * world
        dist.gather_object((mine, interrupted), gathered if rank == 0 else None, dst=0)
        if rank == 0:
            chunks = [chunk for chunk, _ in gathered]
            for chunk in chunks[1:]:
                table.extend(chunk)
            part = read_stack(parts[m], check_finite=False) if parts[m].exists() else None
            meta = read_metadata(parts[m]) if part is not None else {}
            for key in ("frame_indices", "frames_written", "complete", "frames"):
                meta.pop(key, None)
            meta["frames"] = table.attention_columns(m)
            counts = [len(chunk) for chunk in chunks]
            meta["distributed"] = {"world_size": world, "frames_per_rank": counts}
            frame_shape = part.shape[1:] if part is not None else None
            dtype = part.dtype if part is not None else None
            if frame_shape is None:  # rank 0 had no frames: take the shape from rank 1
                raise RuntimeError("torchrun: rank 0 computed no frames; use fewer ranks")
            writer = StackWriter(outputs[m], (sum(counts), *frame_shape), dtype, meta)
            try:
                for row, frame in zip(chunks[0], part, strict=True):
                    writer.write(frame, index=row.index)
                buf = np.empty(frame_shape, dtype=dtype)
                received = torch.from_numpy(buf.reshape(-1).view(np.uint8))
                for src in range(1, world):
                    for row in chunks[src]:
                        dist.recv(received, src=src)  # fills buf through the shared memory
                        writer.write(buf, index=row.index)
            except BaseException:
                writer.path = partial_path(outputs[m])
                writer.abort()
                raise
            if any(flag for _, flag in gathered):  # incomplete: under its own name
                writer.path = partial_path(outputs[m])
                done[m] = writer.abort()
            else:
                done[m] = writer.close()
            del part
        else:
            count = len(mine)
            part = read_stack(parts[m], check_finite=False) if count else None
            for i in range(count):
                frame = np.array(part[i])  # a writable copy: torch refuses read-only memmaps
                dist.send(torch.from_numpy(frame.reshape(-1).view(np.uint8)), dst=0)
            done[m] = count
            del part
        dist.barrier()
        parts[m].unlink(missing_ok=True)
    return done
