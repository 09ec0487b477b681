"""Seeded fuzz test: ~330 malformed inputs through every reading entry point.

The cases come from :mod:`fuzz_cases` (truncations, bit flips, random bytes, odd dtypes, empty
files, huge declared shapes, IFD loops, corrupt compressed streams, mixed pages, ImageJ
counts, special paths). Each call runs under a timeout and must either read the file (equal to
the original, where the case knows it) or raise a StackError naming the file: no other
exception, no hang, no damaged file read as something else. The outcome counts are printed
(``pytest -s`` shows them).
"""

from __future__ import annotations

import collections
import dataclasses
import warnings

import pytest
from fuzz_cases import DECLINED, EITHER, REFUSE, guarded, make_cases

from napari_xfusion._napari._reader import get_reader
from napari_xfusion.core.io import StackError, StackWarning, read_metadata, read_stack


def _napari_read(path):
    reader = get_reader(str(path))
    if reader is None:
        return DECLINED  # napari then says it has no reader for it: a fine answer
    layers = reader(str(path))
    assert len(layers) == 1 and layers[0][2] == "image"
    return layers[0][0]


ENTRY_POINTS = {
    # name: (call, how the data read is found in its result, header only)
    "read_stack": (lambda p: read_stack(p, role="--lr"), lambda v: v, False),
    "read_stack(memmap=False)": (lambda p: read_stack(p, memmap=False), lambda v: v, False),
    "read_metadata": (read_metadata, lambda v: None, True),
    "napari reader": (_napari_read, lambda v: v, False),
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return make_cases(tmp_path_factory.mktemp("fuzz"), seed=20261201)


def test_fuzz_cases_are_many_and_varied(cases):
    assert len(cases) >= 300
    families = collections.Counter(c.family for c in cases)
    wanted = ["truncated", "bitflip-ifd", "random", "huge-shape", "ifd-loop", "corrupt-stream"]
    wanted += ["mixed-pages", "fifo", "symlink-loop", "folder-junk", "odd-dtype", "zero-size"]
    for family in wanted:
        assert families[family] > 0, family


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_fuzz_entry_point(cases, entry, capsys):
    call, data, header_only = ENTRY_POINTS[entry]
    counts: collections.Counter[str] = collections.Counter()
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StackWarning)
        for case in cases:
            if header_only and case.expect == REFUSE:
                # read_metadata reads the header only: pixel-level damage is read_stack's job.
                case = dataclasses.replace(case, expect=EITHER)
            outcome = guarded(call, case, (StackError,), timeout=10.0, data=data)
            counts[outcome.kind] += 1
            if outcome.failed:
                failures.append(f"{outcome.kind}: {case.family} {case.path.name}: "
                                f"{outcome.detail[:300]}")  # fmt: skip
    with capsys.disabled():
        print(f"\nfuzz {entry}: {len(cases)} cases: {dict(sorted(counts.items()))}")
    assert not failures, "\n".join(failures[:20])
    if not header_only:
        assert counts["refused"] > len(cases) // 2  # most cases are damaged beyond reading
