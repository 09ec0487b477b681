"""TIFF stacks in and out: ``(T, H, W)`` arrays, JSON metadata, atomic and streaming writes.

Reading accepts a multipage TIFF, an ImageJ hyperstack (singleton channel / slice axes are
squeezed; real extra axes are refused) or a folder of single-frame TIFFs (natural sort order:
``frame2.tif`` before ``frame10.tif``). Contiguous uncompressed files are memory-mapped, so a
stack larger than RAM can be read frame by frame.

Writing stores our metadata as JSON in the ImageDescription of the first page (tifffile's
"shaped" format, which any TIFF reader ignores and tifffile reads back), never writes a file
half way under its final name (a temp file in the same folder, then :func:`os.replace`), and
:class:`StackWriter` streams frames so an export never holds the whole stack in memory. An
interrupted :class:`StackWriter` still leaves a valid TIFF of the frames done.

The modules: :mod:`~napari_xfusion.core.io.errors` (the errors, and tifffile's complaints
turned into them), :mod:`~napari_xfusion.core.io.checks` (special files, pages, memory, finite
values), :mod:`~napari_xfusion.core.io.description` (our JSON in the ImageDescription),
:mod:`~napari_xfusion.core.io.read` (stacks, folders, metadata),
:mod:`~napari_xfusion.core.io.write` (atomic and streaming writes, text files) and
:mod:`~napari_xfusion.core.io.hashing` (SHA-256 of a file). Import from this package; it
exports every public name.
"""

# MAX_READ_FRACTION and TIFF_SUFFIXES are not in __all__ (as before the split) but are imported
# by name elsewhere; "X as X" marks them as re-exported.
from napari_xfusion.core.io.checks import MAX_READ_FRACTION as MAX_READ_FRACTION
from napari_xfusion.core.io.checks import TIFF_SUFFIXES as TIFF_SUFFIXES
from napari_xfusion.core.io.checks import memory_limit_bytes
from napari_xfusion.core.io.errors import StackError, StackNotFoundError, StackWarning
from napari_xfusion.core.io.hashing import sha256_file
from napari_xfusion.core.io.read import read_metadata, read_stack
from napari_xfusion.core.io.write import StackWriter, stage_text, write_stack, write_text_atomic

__all__ = [
    "StackError",
    "StackNotFoundError",
    "StackWarning",
    "memory_limit_bytes",
    "StackWriter",
    "read_metadata",
    "read_stack",
    "sha256_file",
    "write_stack",
    "stage_text",
    "write_text_atomic",
]
