"""Tests of napari_xfusion.core.meta: metadata values checked before use (issue 13, item 9)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xfusion.core.io import StackError
from napari_xfusion.core.meta import (
    MetadataError,
    parse_frame_indices,
    parse_key_indices,
    parse_separation,
)

SRC = "hr.tif metadata key_indices"


def test_key_indices_accepts_integers_and_integral_floats():
    out = parse_key_indices([0, 5.0, np.int64(10), 19], 20, SRC)
    assert out.dtype == np.int64 and out.tolist() == [0, 5, 10, 19]
    assert parse_key_indices(None, 20, SRC, required=False) is None


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (None, "missing"),
        ({"a": 1}, r"expected a list of integer frame indices, got \{'a': 1\} \(dict\)"),
        ("0,5", r"got '0,5' \(str\)"),
        ([0, 5.7, 10], r"entry 1 is 5\.7, expected an integer"),
        ([0, 1e300], r"entry 1 is 1e\+300"),
        ([0, float("nan")], "entry 1 is nan"),
        ([0, True], "entry 1 is True"),
        ([0, "5"], r"entry 1 is '5' \(str\)"),
        ([-1, 5], "entry 0 is -1; frame indices must be >= 0"),
        ([0, 10, 5], r"entry 2 \(5\) is out of order after 10"),
        ([0, 5, 5], r"entry 2 \(5\) is repeated after 5"),
        ([0, 20], r"entry 1 is 20, past the last frame \(19\) of a 20-frame stack"),
        ([3], r"1 key index\(es\) \[3\]; need at least 2"),
        ([[0, 1], [2, 3]], "entry 0 is"),
    ],
)
def test_key_indices_refusals_name_the_source(value, match):
    with pytest.raises(MetadataError, match=rf"^{SRC}: .*{match}") as info:
        parse_key_indices(value, 20, SRC)
    assert isinstance(info.value, StackError) and isinstance(info.value, ValueError)


def test_frame_indices():
    src = "fused.tif metadata frame_indices"
    assert parse_frame_indices([3, 1, 2], 5, src).tolist() == [3, 1, 2]
    assert parse_frame_indices([], None, src).size == 0
    for value, match in [
        ("0:5", r"got '0:5' \(str\)"),
        ([0, -5], "entry 1 is -5; frame indices must be >= 0"),
        ([0, 5], r"entry 1 is 5, past the last frame \(4\)"),
        ([1, 1], r"frame index 1 appears twice \(entries 0 and 1\)"),
        (None, "missing"),
        ([0.5], "entry 0 is 0.5"),
    ]:
        with pytest.raises(MetadataError, match=rf"^{src}: .*{match}"):
            parse_frame_indices(value, 5, src)


def test_separation():
    src = "lr.tif metadata separation"
    assert parse_separation(2, 10, src) == 2 and parse_separation(3.0, None, src) == 3
    for value, match in [
        (2.5, r"the value is 2\.5, expected an integer"),
        (0, "0; the LR separation must be >= 1"),
        (-1, "must be >= 1"),
        (1000, "1000 is not below the stack's 10 frames"),
        (10, "10 is not below"),
        ("2", r"'2' \(str\)"),
        (None, "missing"),
        (True, "the value is True"),
    ]:
        with pytest.raises(MetadataError, match=rf"^{src}: .*{match}"):
            parse_separation(value, 10, src)


def test_engine_key_frames_refuse_fractional_and_odd_indices():
    from napari_xfusion.engine import InputError, KeyFrames

    frames = np.zeros((2, 8, 8), np.float32)
    assert KeyFrames(frames, [0, 5.0]).indices.tolist() == [0, 5]
    for bad, match in [([0, 5.7], "5.7"), ({"a": 0}, "dict"), (None, "missing"),
                       ([0, "x"], "str"), ([0, 1e300], "1e\\+300")]:  # fmt: skip
        with pytest.raises(InputError, match=rf"HR key indices: .*{match}"):
            KeyFrames(frames, bad)
