"""Tests of napari_xfusion.engine: windows, key layouts, several methods, attention, cancel."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pytest

from napari_xfusion import engine
from napari_xfusion.core.attention import normalise_scores
from napari_xfusion.core.resample import upscale_bicubic
from napari_xfusion.engine import InputError, KeyFrames
from napari_xfusion.methods import Reconstruction, Reconstructor, WindowInputs

T, H, W = 14, 4, 6  # tiny LR frames; HR keys are 16x24


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.random((T, H, W), dtype=np.float32), rng.random((T, 4 * H, 4 * W), dtype=np.float32)


class KeyBlend(Reconstructor):
    """Test method: the mean of the two HR keys plus the up-sampled LR frame at t, with fake
    attention scores that depend only on the window (so normalised values are predictable)."""

    name = "blend"
    uses_hr_keys = True

    def __init__(self, attention: bool = True) -> None:
        self.attention = attention
        self.calls: list[int] = []
        self.resets = 0
        self.stream_closed = False

    def reconstruct(self, inputs: WindowInputs) -> Reconstruction:
        w = inputs.window
        self.calls.append(w.target)
        frame = inputs.hr_keys.mean(axis=0) + np.repeat(np.repeat(inputs.lr[1], 4, 0), 4, 1)
        att = None
        if self.attention:
            gap = w.key_after - w.key_before
            att = np.array([0.1, 1.0, 0.1, 2.0 - (w.target - w.key_before) / gap, 1.0 + w.target])
        return Reconstruction(frame=frame.astype(np.float32), attention=att)

    def reconstruct_stream(self, inputs: Iterable[WindowInputs]) -> Iterator[Reconstruction]:
        try:
            yield from super().reconstruct_stream(inputs)
        finally:
            self.stream_closed = True

    def reset(self) -> None:
        self.resets += 1


class CountingStack:
    """Array stand-in that counts which frames are read (to check each is read once)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.reads = array, []
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, t: int) -> np.ndarray:
        self.reads.append(int(t))
        return self.array[t]


def test_windows_at_both_ends_and_bicubic_frames(data):
    lr, hr = data
    keys = KeyFrames.from_full_rate(hr, key_step=5)
    results = list(engine.run("bicubic", lr, keys, separation=2, frames=[0, T - 1]))
    assert [r.index for r in results] == [0, T - 1]
    first, last = results
    assert first.window.lr_indices == (0, 0, 2) and first.window.keys == (0, 5)
    # past the last key (10): the two last keys
    assert last.window.lr_indices == (T - 3, T - 1, T - 1) and last.window.keys == (5, 10)
    for r in results:
        assert r.frame.dtype == np.float32 and r.frame.shape == (4 * H, 4 * W)
        np.testing.assert_array_equal(r.frame, upscale_bicubic(lr[r.index], 4))
        assert r.attention is None and r.backward is None and r.variance is None
    assert (first.done, first.total, last.done, last.total) == (1, 2, 2, 2)
    assert last.eta_seconds == 0.0 and first.seconds >= 0.0


def test_full_rate_and_sparse_key_layouts_agree(data):
    lr, hr = data
    full = KeyFrames.from_full_rate(hr, key_step=4)
    indices = [0, 4, 8, 12]
    sparse = KeyFrames(hr[indices], indices)
    assert full.rule == {"key_step": 4} and sparse.rule == {"key_indices": indices}
    a = list(engine.run([KeyBlend(attention=False)], lr, full, separation=1))
    b = list(engine.run([KeyBlend(attention=False)], lr, sparse, separation=1))
    assert [r.window for r in a] == [r.window for r in b]
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ra.frame, rb.frame)
    first_last = KeyFrames.from_full_rate(hr, first_last=True)
    assert first_last.indices.tolist() == [0, T - 1]
    assert {r.window.keys for r in engine.run("bicubic", lr, first_last)} == {(0, T - 1)}


def test_several_methods_interleave_and_read_each_frame_once(data):
    lr, hr = data
    counting_lr, counting_hr = CountingStack(lr), CountingStack(hr[[0, 7, 13]])
    keys = KeyFrames(counting_hr, [0, 7, 13])
    blend = KeyBlend(attention=False)
    results = list(
        engine.run(["bicubic", blend, "bayesian"], counting_lr, keys, frames=range(3, 9))
    )
    assert [(r.method, r.index) for r in results[:4]] == [
        ("bicubic", 3), ("blend", 3), ("bayesian", 3), ("bicubic", 4)
    ]  # fmt: skip
    assert len(results) == 18 and results[-1].done == results[-1].total == 18
    assert sorted(counting_lr.reads) == sorted(set(counting_lr.reads))  # no frame read twice
    assert sorted(counting_hr.reads) == [0, 1, 2]  # keys 0, 7, 13 once each
    bayes = [r for r in results if r.method == "bayesian"]
    assert all(r.variance is not None and r.variance.shape == (4 * H, 4 * W) for r in bayes)


def test_attention_raw_and_normalised_live(data):
    lr, hr = data
    keys = KeyFrames.from_full_rate(hr, key_step=5)  # keys 0, 5, 10
    blend = KeyBlend()
    results = list(engine.run([blend], lr, keys, frames=range(2, 9)))
    # key 0 (group of frames 2..4) is not requested: computed once, not yielded
    assert [r.index for r in results] == list(range(2, 9))
    assert blend.calls == [0, *range(2, 9)]
    for r in results:
        w = r.window
        assert r.backward == pytest.approx(2.0 - (r.index - w.key_before) / 5)
        assert r.forward == pytest.approx(1.0 + r.index)
        assert r.backward_norm == pytest.approx(r.backward / 2.0)  # key's own backward is 2
        assert r.forward_norm == pytest.approx(r.forward / (1.0 + w.key_before))
    table = engine.attention_table(results + [_key0(blend, lr, keys)], keys.indices)
    live = {r.index: r for r in results}
    for t, bn, fn in zip(
        table["index"], table["backward_norm"], table["forward_norm"], strict=True
    ):
        if t in live:
            assert bn == pytest.approx(live[t].backward_norm)
            assert fn == pytest.approx(live[t].forward_norm)
    expected = normalise_scores(table["index"], table["backward"], keys.indices)
    np.testing.assert_allclose(table["backward_norm"], expected)


def _key0(blend: KeyBlend, lr: np.ndarray, keys: KeyFrames) -> engine.FrameResult:
    return next(engine.run([blend], lr, keys, frames=[0]))


def test_method_without_attention_skips_extra_key_frames(data):
    lr, hr = data
    keys = KeyFrames.from_full_rate(hr, key_step=5)
    blend = KeyBlend(attention=False)
    results = list(engine.run([blend], lr, keys, frames=range(2, 4)))
    # Key 0 comes first and is computed once (the engine cannot know before the first result
    # that this method has no attention); nothing more afterwards.
    assert blend.calls == [0, 2, 3]
    assert all(r.backward_norm is None for r in results)
    blend.calls.clear()
    list(engine.run([blend], lr, keys, frames=[2, 3, 7, 8]))
    assert blend.calls == [0, 2, 3, 7, 8]  # key 5 (group of 7, 8) skipped


def test_cancel_keeps_yielded_frames_and_closes_streams(data):
    lr, hr = data
    keys = KeyFrames.from_full_rate(hr, key_step=5)
    blend = KeyBlend(attention=False)
    gen = engine.run([blend], lr, keys)
    kept = [next(gen) for _ in range(3)]
    gen.close()
    assert blend.stream_closed and blend.resets == 2  # reset at start and on close
    assert [r.index for r in kept] == [0, 1, 2] and kept[2].total == T
    np.testing.assert_array_equal(kept[1].frame, blend.reconstruct(_inputs(lr, hr, kept[1])).frame)


def _inputs(lr: np.ndarray, hr: np.ndarray, r: engine.FrameResult) -> WindowInputs:
    w = r.window
    return WindowInputs(w, lr[list(w.lr_indices)], hr[list(w.keys)], lr[list(w.keys)])


def test_raw_inputs_with_normalisation_applied_per_frame(data):
    from napari_xfusion.core.normalise import Normalisation

    lr, hr = data
    norm = Normalisation(100.0, 4100.0, "uint16")
    raw_lr, raw_hr = norm.invert(lr), norm.invert(hr)
    keys = KeyFrames.from_full_rate(raw_hr, key_step=5, normalisation=norm)
    got = list(engine.run("bicubic", raw_lr, keys, frames=[3], lr_normalisation=norm))[0]
    np.testing.assert_allclose(got.frame, upscale_bicubic(norm.apply(raw_lr[3]), 4), atol=1e-6)
    assert keys[5].dtype == np.float32
    with pytest.raises(InputError, match="LR stream is uint16.*Normalisation"):
        engine.run("bicubic", raw_lr, keys)
    with pytest.raises(InputError, match="HR keys is uint16"):
        KeyFrames(raw_hr[:2], [0, 5])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda lr, hr: ("bicubic", lr, KeyFrames(hr[:2, :-4], [0, 5])), r"HR keys are 12x24 but"),
        (lambda lr, hr: ("bicubic", lr, KeyFrames(hr[:2], [0, T])), rf"HR key index {T} is out"),
        (lambda lr, hr: ("bicubic", lr, KeyFrames(hr[:1], [0])), "at least 2 HR key frames"),
        (lambda lr, hr: ("bicubic", lr, KeyFrames(hr[:3], [0, 5])), "3 frames but 2 key indices"),
        (lambda lr, hr: ("bicubic", lr, KeyFrames(hr[:2], [5, 5])), "strictly increasing"),
        (
            lambda lr, hr: ("bicubic", lr, KeyFrames.from_full_rate(hr[:-1], key_step=5)),
            rf"full-rate HR stack has {T - 1} frames but the LR stream has {T}",
        ),
        (lambda lr, hr: ("bicubic", lr[0], KeyFrames(hr[:2], [0, 5])), r"LR must be a \(T, h, w\)"),
        (lambda lr, hr: ("nope", lr, KeyFrames(hr[:2], [0, 5])), "unknown method 'nope'"),
        (
            lambda lr, hr: (["bicubic", "bicubic"], lr, KeyFrames(hr[:2], [0, 5])),
            "given twice",
        ),
    ],
)
def test_bad_inputs_fail_up_front(data, make, message):
    lr, hr = data
    with pytest.raises(InputError, match=message):
        method, lr_in, keys = make(lr, hr)
        engine.run(method, lr_in, keys)


def test_bad_frames_separation_device(data):
    lr, hr = data
    keys = KeyFrames.from_full_rate(hr, key_step=5)
    with pytest.raises(InputError, match=rf"frame {T} is outside the LR sequence.*0..{T - 1}"):
        engine.run("bicubic", lr, keys, frames=slice(10, T + 5))
    with pytest.raises(InputError, match="frame -1 is outside"):
        engine.run("bicubic", lr, keys, frames=[-1, 2])
    with pytest.raises(InputError, match="selection is empty"):
        engine.run("bicubic", lr, keys, frames=[])
    with pytest.raises(InputError, match="separation must be an integer >= 1"):
        engine.run("bicubic", lr, keys, separation=0)
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        engine.run("bicubic", lr, keys, device="tpu")
    with pytest.raises(InputError, match="options given for methods that are not run"):
        engine.run("bicubic", lr, keys, method_options={"bayesian": {}})


def test_nan_named_when_read(data):
    lr, hr = data
    lr = lr.copy()
    lr[6, 1, 1] = np.nan
    keys = KeyFrames.from_full_rate(hr, key_step=5)
    gen = engine.run("bicubic", lr, keys)
    done = []
    with pytest.raises(InputError, match="LR frame 6 has 1 non-finite"):
        for r in gen:
            done.append(r.index)
    assert done == [0, 1, 2, 3, 4]  # window of 5 reads LR frame 6
    hr = hr.copy()
    hr[10, 0, 0] = np.inf
    with pytest.raises(InputError, match="HR key frame 10 has 1 non-finite"):
        list(engine.run("bicubic", data[0], KeyFrames.from_full_rate(hr, key_step=5)))


def test_missing_key_lookup_message(data):
    keys = KeyFrames.from_full_rate(data[1], key_step=5)
    assert 5 in keys and 4 not in keys and len(keys) == 3
    with pytest.raises(KeyError, match=r"no HR key frame at LR time 4; keys are at \[0, 5, 10\]"):
        keys[4]


def test_split_targets_contiguous():
    chunks = [engine.split_targets(np.arange(7), r, 3).tolist() for r in range(3)]
    assert chunks == [[0, 1, 2], [3, 4], [5, 6]]
