"""core.attention: scores normalised by the score at the preceding key's own time."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_xfusion.core.attention import normalise_scores, preceding_keys


def test_each_gap_starts_at_one() -> None:
    keys = [0, 4, 8]
    targets = np.arange(9)
    backward = np.array([2.0, 1.5, 1.0, 0.8, 4.0, 3.0, 2.0, 1.0, 10.0])
    result = normalise_scores(targets, backward, keys)
    # t = 0..3 by t=0's score, t = 4..8 by t=4's (the last key, 8, still belongs to the gap
    # 4 -> 8: its window's backward key is 4).
    expected = [1.0, 0.75, 0.5, 0.4, 1.0, 0.75, 0.5, 0.25, 2.5]
    np.testing.assert_allclose(result, expected)
    assert result.dtype == np.float64


def test_preceding_keys_follow_the_windows() -> None:
    keys = np.array([2, 5, 9])
    targets = [0, 1, 2, 3, 5, 8, 9, 11]
    # Before the first key: the first key; at or past the last key: the one before it.
    np.testing.assert_array_equal(preceding_keys(targets, keys), [2, 2, 2, 2, 5, 5, 5, 5])


def test_unordered_targets_and_several_scores_per_target() -> None:
    keys = [0, 3, 6]
    targets = np.array([4, 0, 3, 1, 5])
    scores = np.array([[2.0, 1.0], [4.0, 2.0], [8.0, 4.0], [1.0, 4.0], [4.0, 8.0]])
    result = normalise_scores(targets, scores, keys)
    expected = [[0.25, 0.25], [1.0, 1.0], [1.0, 1.0], [0.25, 2.0], [0.5, 2.0]]
    np.testing.assert_allclose(result, expected)


def test_missing_key_score_gives_nan() -> None:
    keys = [0, 10, 20]
    # A window 12..15 without t=10, plus t=0 and 1 with a NaN score at the key.
    targets = [0, 1, 12, 13, 14, 15]
    scores = [np.nan, 0.5, 1.0, 0.9, 0.8, 0.7]
    result = normalise_scores(targets, scores, keys)
    assert np.isnan(result).all()


def test_zero_key_score_gives_inf_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = normalise_scores([0, 1], [0.0, 0.5], [0, 5])
    assert np.isnan(result[0]) and result[1] == np.inf


def test_first_last_keys() -> None:
    n = 6
    keys = [0, n - 1]
    scores = np.linspace(1.0, 0.5, n) * 3.0
    result = normalise_scores(np.arange(n), scores, keys)
    np.testing.assert_allclose(result, np.linspace(1.0, 0.5, n))


def test_empty() -> None:
    assert normalise_scores([], [], [0, 4]).shape == (0,)


@pytest.mark.parametrize(
    ("targets", "scores", "keys", "message"),
    [
        ([0, 1], [1.0], [0, 4], "2 targets but scores of shape \\(1,\\)"),
        ([0, 1], 1.0, [0, 4], "one score"),
        ([[0, 1]], [1.0, 2.0], [0, 4], "1-D array"),
        ([0.0, 1.5], [1.0, 2.0], [0, 4], "integer frame indices"),
        ([0, 0], [1.0, 2.0], [0, 4], "repeated: \\[0\\]"),
        ([0, 1], [1.0, 2.0], [4], "at least 2"),
        ([0, 1], [1.0, 2.0], [4, 0], "strictly increasing"),
        ([0, 1], [1.0, 2.0], [0.0, 4.0], "integers"),
    ],
)
def test_bad_input(targets, scores, keys, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalise_scores(targets, scores, keys)
