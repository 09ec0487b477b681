"""Tests of napari_xfusion.core.io: round trips, streaming writes, and every bad input's error."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile

from napari_xfusion.core.io import StackError, StackWriter, read_metadata, read_stack, write_stack


@pytest.fixture
def stack() -> np.ndarray:
    return np.random.default_rng(0).random((5, 8, 12), dtype=np.float32)


def test_write_read_round_trip_with_metadata(tmp_path, stack):
    meta = {
        "method": "bicubic",
        "parameters": {"separation": 2},
        "normalisation": {"low": np.float64(12.5), "high": 4000.0, "dtype": "uint16"},
        "frame_indices": np.arange(5),
        "missing": float("nan"),
    }
    path = write_stack(tmp_path / "out.tif", stack, meta)
    back = read_stack(path)
    assert isinstance(back, np.memmap)  # uncompressed, contiguous: memory-mapped
    assert back.shape == (5, 8, 12) and back.dtype == np.float32
    np.testing.assert_array_equal(back, stack)
    assert read_metadata(path) == {
        "method": "bicubic",
        "parameters": {"separation": 2},
        "normalisation": {"low": 12.5, "high": 4000.0, "dtype": "uint16"},
        "frame_indices": [0, 1, 2, 3, 4],
        "missing": None,
    }
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_write_stack_replaces_existing_file_and_refuses_2d(tmp_path, stack):
    path = tmp_path / "out.tif"
    write_stack(path, stack[:2])
    write_stack(path, stack.astype(np.uint16))
    assert read_stack(path).shape == (5, 8, 12)
    with pytest.raises(StackError, match=r"not 3-D.*\(8, 12\)"):
        write_stack(path, stack[0])
    with pytest.raises(ValueError, match="reserved"):
        write_stack(path, stack, {"shape": 1})


def test_metadata_absent_or_from_imagej_info(tmp_path, stack):
    tifffile.imwrite(tmp_path / "plain.tif", stack)
    assert read_metadata(tmp_path / "plain.tif") == {}
    tifffile.imwrite(
        tmp_path / "ij.tif",
        stack[:, None, None],
        imagej=True,
        metadata={"axes": "TZCYX", "Info": json.dumps({"method": "bayesian"})},
    )
    assert read_metadata(tmp_path / "ij.tif") == {"method": "bayesian"}
    assert read_metadata(tmp_path) == {}


def test_imagej_hyperstack_singletons_squeezed(tmp_path):
    data = np.arange(4 * 6 * 10, dtype=np.uint16).reshape(4, 1, 1, 6, 10)
    tifffile.imwrite(tmp_path / "hs.tif", data, imagej=True, metadata={"axes": "TZCYX"})
    back = read_stack(tmp_path / "hs.tif")
    assert back.shape == (4, 6, 10) and back.dtype == np.uint16
    np.testing.assert_array_equal(back, data[:, 0, 0])


def test_imagej_hyperstack_with_real_extra_axis_refused(tmp_path):
    data = np.zeros((4, 2, 6, 10), dtype=np.uint16)
    path = tmp_path / "hs.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TCYX"})
    with pytest.raises(StackError, match=r"hs\.tif: not 3-D.*T=4, C=2"):
        read_stack(path)


def test_rgb_refused(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((6, 10, 3), np.uint8), photometric="rgb")
    with pytest.raises(StackError, match=r"rgb\.tif: has 3 colour samples"):
        read_stack(path)


def test_compressed_file_read_into_memory(tmp_path, stack):
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, stack, compression="zlib")
    back = read_stack(path)
    assert not isinstance(back, np.memmap)
    np.testing.assert_array_equal(back, stack)


def test_single_page_is_one_frame(tmp_path, stack):
    tifffile.imwrite(tmp_path / "one.tif", stack[0])
    assert read_stack(tmp_path / "one.tif").shape == (1, 8, 12)


def test_folder_natural_sort(tmp_path, stack):
    for i in (0, 2, 10, 1):  # lexical order would put frame10 before frame2
        tifffile.imwrite(tmp_path / f"frame{i}.tif", stack[i % 5] + i)
    (tmp_path / "notes.txt").write_text("not an image")
    back = read_stack(tmp_path)
    assert back.shape == (4, 8, 12)
    for row, i in enumerate((0, 1, 2, 10)):
        np.testing.assert_array_equal(back[row], stack[i % 5] + i)


def test_folder_mixed_shapes_names_file_and_shapes(tmp_path):
    tifffile.imwrite(tmp_path / "a1.tif", np.zeros((8, 12), np.uint16))
    tifffile.imwrite(tmp_path / "a2.tif", np.zeros((8, 12), np.uint16))
    tifffile.imwrite(tmp_path / "a3.tif", np.zeros((8, 10), np.uint16))
    with pytest.raises(StackError, match=r"a3\.tif is 8x10 but a1\.tif .* is 8x12"):
        read_stack(tmp_path)


def test_folder_multi_frame_file_refused(tmp_path, stack):
    tifffile.imwrite(tmp_path / "a1.tif", stack[0])
    tifffile.imwrite(tmp_path / "a2.tif", stack[:2])
    with pytest.raises(StackError, match=r"a2\.tif: holds 2 frames"):
        read_stack(tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(StackError, match="folder holds no .tif"):
        read_stack(tmp_path)


def test_non_finite_names_first_bad_frame(tmp_path, stack):
    stack[3, 2, 2] = np.nan
    stack[4, 0, 0] = np.inf
    write_stack(tmp_path / "nan.tif", stack)
    with pytest.raises(StackError, match=r"nan\.tif: frame 3 has 1 non-finite"):
        read_stack(tmp_path / "nan.tif")
    assert np.isnan(read_stack(tmp_path / "nan.tif", check_finite=False)[3, 2, 2])


def test_not_a_tiff(tmp_path):
    path = tmp_path / "fake.tif"
    path.write_bytes(b"PNG or whatever, not a TIFF")
    with pytest.raises(StackError, match=r"fake\.tif: not a TIFF"):
        read_stack(path)
    with pytest.raises(StackError, match="not a TIFF"):
        read_metadata(path)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.tif: no such file"):
        read_stack(tmp_path / "nothere.tif")


def test_stack_writer_streams_and_records_indices(tmp_path, stack):
    path = tmp_path / "s.tif"
    with StackWriter(path, (5, 8, 12), np.float32, {"method": "bicubic"}) as out:
        for t in range(5):
            out.write(stack[t].astype(np.float64), index=t + 10)  # same-kind cast is fine
        assert not path.exists()  # only the temp file until close
        out.update_metadata({"attention": {"backward": [0.5] * 5}})
    back = read_stack(path)
    assert isinstance(back, np.memmap)
    np.testing.assert_array_equal(back, stack)
    meta = read_metadata(path)
    assert meta["method"] == "bicubic" and meta["complete"] is True
    assert meta["frame_indices"] == [10, 11, 12, 13, 14] and meta["frames_written"] == 5
    assert meta["attention"] == {"backward": [0.5] * 5}
    assert [p.name for p in tmp_path.iterdir()] == ["s.tif"]


def test_stack_writer_keeps_done_frames_on_interrupt(tmp_path, stack):
    path = tmp_path / "s.tif"
    with pytest.raises(KeyboardInterrupt), StackWriter(path, (8, 12), np.float32) as out:
        out.write(stack[0], index=0)
        out.write(stack[1], index=1)
        raise KeyboardInterrupt
    back = read_stack(path)
    np.testing.assert_array_equal(back, stack[:2])
    meta = read_metadata(path)
    assert meta["complete"] is False and meta["frames_written"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["s.tif"]


def test_stack_writer_abort_without_frames_leaves_nothing(tmp_path):
    out = StackWriter(tmp_path / "s.tif", (8, 12), np.uint16)
    assert out.abort() == 0
    assert list(tmp_path.iterdir()) == []


def test_stack_writer_rejects_bad_frames(tmp_path, stack):
    out = StackWriter(tmp_path / "s.tif", (1, 8, 12), np.uint16)
    with pytest.raises(ValueError, match=r"frame 0 has shape \(8, 10\), expected \(8, 12\)"):
        out.write(np.zeros((8, 10), np.uint16))
    with pytest.raises(TypeError, match="float32.*does not cast safely"):
        out.write(stack[0])
    out.write(np.zeros((8, 12), np.uint8))
    with pytest.raises(ValueError, match="already wrote the 1 frames"):
        out.write(np.zeros((8, 12), np.uint16))
    assert out.close() == 1
    assert read_stack(tmp_path / "s.tif").dtype == np.uint16
