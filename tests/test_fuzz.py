"""Seeded fuzz test: ~330 malformed inputs through every reading entry point.

The cases come from :mod:`fuzz_cases` (truncations, bit flips, random bytes, odd dtypes, empty
files, huge declared shapes, IFD loops, corrupt compressed streams, mixed pages, ImageJ
counts, special paths). Each call runs under a timeout and must either read the file (equal to
the original, where the case knows it) or raise a StackError naming the file: no other
exception, no hang, no damaged file read as something else. The same cases then go through
the commands' main functions in-process (``fuse`` as --lr, --hr and --truth, ``evaluate``,
``simulate``): exit 0, or exit 2 with one error line naming the file and the option, never a
traceback. The outcome counts are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import warnings
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
from fuzz_cases import DECLINED, EITHER, REFUSE, guarded, make_cases

from napari_xfusion import cli
from napari_xfusion._napari._reader import get_reader
from napari_xfusion.core.io import (
    StackError,
    StackWarning,
    read_metadata,
    read_stack,
    write_stack,
)


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


# ---------------------------------------------------------------------------------------------
# The same files through the commands' main functions, in-process.


class CommandRefused(Exception):
    """The command exited 2 with one error line naming the option (the line is the message)."""


def _command(argv, role):
    """``cli.main(argv(path))`` as a guarded call: exit 0 = read, exit 2 with exactly one
    ``error:`` line containing ``role`` = refused; any other status, a traceback, several
    lines or a line without the option is a failure (raised as something ``guarded`` calls a
    crash)."""

    def call(path):
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            rc = cli.main(argv(path))
        text = err.getvalue()
        if "Traceback" in text:
            raise RuntimeError(f"traceback on stderr: {text[-300:]}")
        if rc == 0:
            return None
        lines = [line for line in text.splitlines() if "error:" in line]
        if rc != 2 or len(lines) != 1:
            raise RuntimeError(f"exit {rc} with {len(lines)} error line(s): {text[-300:]}")
        if role not in lines[0]:
            raise RuntimeError(f"the message does not name {role}: {lines[0]}")
        raise CommandRefused(lines[0])

    return call


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Valid partners sized for the fuzz originals (mostly 6 frames of 16x24), so that a
    readable case really runs through fusion: LR 6x(4x6) with HR keys 2x(16x24) at [0, 5]
    (a case as --hr is then a full-rate HR stack, as --truth the truth), and HR keys
    2x(64x96) for a case as --lr."""
    root = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    files = {
        "lr": (rng.random((6, 4, 6), dtype=np.float32), {}),
        "keys": (rng.random((2, 16, 24), dtype=np.float32), {"key_indices": [0, 5]}),
        "keys_x16": (rng.random((2, 64, 96), dtype=np.float32), {"key_indices": [0, 5]}),
        "truth": (rng.random((6, 16, 24), dtype=np.float32), {}),
    }
    paths = {k: str(write_stack(root / f"{k}.tif", a, m)) for k, (a, m) in files.items()}
    return {**paths, "out": root / "out"}


def _commands(good):
    fuse = ["fuse", "--no-progress", "-o", str(good["out"] / "f.tif")]
    lr, keys = good["lr"], good["keys"]
    return {
        # name: (argv for a case path, the option the message must name)
        "fuse --lr": (lambda p: [*fuse, "--lr", str(p), "--hr", good["keys_x16"]], "--lr"),
        "fuse --hr": (lambda p: [*fuse, "--lr", lr, "--hr", str(p), "--key-step", "5"], "--hr"),
        "fuse --truth": (
            lambda p: [*fuse, "--lr", lr, "--hr", keys, "--truth", str(p)],
            "--truth",
        ),
        "evaluate": (
            lambda p: [
                "evaluate",
                str(p),
                "--truth",
                good["truth"],
                "--csv",
                str(good["out"] / "m.csv"),
            ],  # fmt: skip
            "fused stack",
        ),
        "simulate": (
            lambda p: ["simulate", str(p), "--key-step", "2", "-o", str(good["out"] / "sim")],
            "HR input",
        ),
    }


@pytest.mark.parametrize("command", ["fuse --lr", "fuse --hr", "fuse --truth", "evaluate",
                                     "simulate"])  # fmt: skip
def test_fuzz_command(cases, good, command, capsys):
    argv, role = _commands(good)[command]
    call = _command(argv, role)
    counts: collections.Counter[str] = collections.Counter()
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in cases:
            # A command may also refuse a readable file (wrong shape for the other inputs):
            # only "must be refused" is checked on top of "no traceback, named file, option".
            case = dataclasses.replace(case, expect=REFUSE if case.expect == REFUSE else EITHER)
            outcome = guarded(call, case, (CommandRefused,), timeout=10.0, data=lambda v: None)
            counts[outcome.kind] += 1
            if outcome.failed:
                failures.append(f"{outcome.kind}: {case.family} {case.path.name}: "
                                f"{outcome.detail[:300]}")  # fmt: skip
    with capsys.disabled():
        print(f"\nfuzz xfusion {command}: {len(cases)} cases: {dict(sorted(counts.items()))}")
    assert not failures, "\n".join(failures[:20])
    assert counts["refused"] > len(cases) // 2
