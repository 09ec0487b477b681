"""core.windows: the sampling plan shared by the engine, the training sampler and the GUI."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from napari_xfusion.core.windows import (
    Window,
    bracketing_keys,
    key_indices,
    lr_indices,
    plan,
    window,
)


def test_key_indices_every_k() -> None:
    keys = key_indices(21, key_step=10)
    np.testing.assert_array_equal(keys, [0, 10, 20])
    assert keys.dtype == np.int64
    # The last frame is a key only when it falls on the grid.
    np.testing.assert_array_equal(key_indices(20, key_step=10), [0, 10])
    np.testing.assert_array_equal(key_indices(5, key_step=2), [0, 2, 4])


def test_key_indices_first_last() -> None:
    np.testing.assert_array_equal(key_indices(100, first_last=True), [0, 99])
    np.testing.assert_array_equal(key_indices(2, first_last=True), [0, 1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_frames": 1, "first_last": True}, "at least 2 frames"),
        ({"n_frames": 10}, "give key_step"),
        ({"n_frames": 10, "key_step": 2, "first_last": True}, "not both"),
        ({"n_frames": 10, "key_step": 1}, "integer >= 2"),
        ({"n_frames": 10, "key_step": 2.5}, "integer >= 2"),
        ({"n_frames": 10, "key_step": 10}, "fewer than 2 HR keys in 10 frames"),
    ],
)
def test_key_indices_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        key_indices(**kwargs)


@pytest.mark.parametrize(
    ("target", "separation", "expected"),
    [
        (5, 1, (4, 5, 6)),
        (5, 3, (2, 5, 8)),
        (0, 1, (0, 0, 1)),
        (0, 3, (0, 0, 3)),
        (1, 3, (0, 1, 4)),
        (2, 3, (0, 2, 5)),
        (3, 3, (0, 3, 6)),
        (9, 1, (8, 9, 9)),
        (9, 3, (6, 9, 9)),
        (8, 3, (5, 8, 9)),
        (7, 3, (4, 7, 9)),
        (6, 3, (3, 6, 9)),
    ],
)
def test_lr_indices_clamp_at_both_ends(
    target: int, separation: int, expected: tuple[int, int, int]
) -> None:
    assert lr_indices(target, 10, separation) == expected


@pytest.mark.parametrize(
    ("target", "separation", "message"),
    [
        (10, 1, r"target frame 10 is outside the LR sequence \[0, 9\]"),
        (-1, 1, "outside"),
        (3, 0, "separation must be an integer >= 1"),
        (3, 1.5, "separation must be an integer >= 1"),
        (2.5, 1, "target frame must be an integer index, got 2.5"),
    ],
)
def test_lr_indices_errors(target: int, separation: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lr_indices(target, 10, separation)


def test_bracketing_keys() -> None:
    keys = np.array([0, 4, 8])
    got = [bracketing_keys(t, keys) for t in range(10)]
    assert got[:4] == [(0, 4)] * 4
    assert got[4:8] == [(4, 8)] * 4
    # At and past the last key: the two nearest keys.
    assert got[8:] == [(4, 8)] * 2
    # Before the first key (real data can start before the HR camera): the two first keys.
    assert bracketing_keys(1, np.array([3, 6, 9])) == (3, 6)


def test_window_fields() -> None:
    keys = key_indices(30, key_step=10)
    win = window(13, 30, 3, keys)
    assert win == Window(
        target=13, lr_indices=(10, 13, 16), key_before=10, key_after=20, separation=3
    )
    assert win.keys == (10, 20)
    assert win.offset_from_key == 3
    assert window(10, 30, 1, keys).offset_from_key == 0


def test_window_holds_plain_ints_for_json_metadata() -> None:
    win = window(np.int64(3), 10, np.int64(2), np.array([0, 5]))
    record = json.loads(json.dumps(asdict(win)))
    assert record == {
        "target": 3,
        "lr_indices": [1, 3, 5],
        "key_before": 0,
        "key_after": 5,
        "separation": 2,
    }


def test_window_at_both_ends_with_first_last_keys() -> None:
    keys = key_indices(12, first_last=True)
    first = window(0, 12, 3, keys)
    last = window(11, 12, 3, keys)
    assert (first.lr_indices, first.keys) == ((0, 0, 3), (0, 11))
    assert (last.lr_indices, last.keys) == ((8, 11, 11), (0, 11))
    assert last.offset_from_key == 11
    # Near the edges with s = 3 the neighbours clamp but the keys do not move.
    assert window(1, 12, 3, keys).lr_indices == (0, 1, 4)
    assert window(10, 12, 3, keys).lr_indices == (7, 10, 11)


def test_window_keys_at_both_ends_every_k() -> None:
    keys = key_indices(9, key_step=4)  # 0, 4, 8: the last frame is a key
    assert window(0, 9, 2, keys).keys == (0, 4)
    assert window(8, 9, 2, keys).keys == (4, 8)
    assert window(8, 9, 2, keys).lr_indices == (6, 8, 8)


def test_window_key_before_is_always_before_key_after() -> None:
    keys = key_indices(23, key_step=5)
    for win in plan(range(23), 23, 2, keys):
        assert win.key_before < win.key_after
        assert win.lr_indices[1] == win.target
        assert 0 <= win.lr_indices[0] <= win.target <= win.lr_indices[2] <= 22


def test_plan_keeps_the_order_given() -> None:
    keys = [0, 5, 10]
    windows = plan([7, 2, 7], 11, 1, keys)
    assert [w.target for w in windows] == [7, 2, 7]
    assert windows[0] == windows[2] == window(7, 11, 1, keys)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([3], "at least 2 HR key frames"),
        ([0, 5, 5], "strictly increasing"),
        ([5, 0], "strictly increasing"),
        ([0, 10], r"must lie in \[0, 9\].*10 frames"),
        ([-1, 4], r"must lie in \[0, 9\]"),
    ],
)
def test_bad_keys(keys: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        window(3, 10, 1, keys)
    with pytest.raises(ValueError, match=message):
        plan([3], 10, 1, keys)


def test_window_target_outside() -> None:
    with pytest.raises(ValueError, match="outside the LR sequence"):
        window(10, 10, 1, [0, 5])
