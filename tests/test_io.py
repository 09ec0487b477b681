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


# -- issue 13: damaged, truncated, hostile and special inputs ------------------------------------

import signal  # noqa: E402
import struct  # noqa: E402

from napari_xfusion.core import io as core_io  # noqa: E402
from napari_xfusion.core.io import StackNotFoundError, StackWarning  # noqa: E402
from napari_xfusion.core.io import checks as io_checks  # noqa: E402


def _ifds(path):
    with tifffile.TiffFile(path) as tif:
        return [int(p.offset) for p in tif.pages]


def _next_ifd_field(data, ifd):
    (count,) = struct.unpack_from("<H", data, ifd)
    return ifd + 2 + 12 * count


def test_role_prefixes_the_message_and_missing_files_are_both_kinds(tmp_path):
    with pytest.raises(StackNotFoundError, match=r"^--lr .*nothere\.tif: no such file") as info:
        read_stack(tmp_path / "nothere.tif", role="--lr")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, StackError)
    assert info.value.role == "--lr" and info.value.path == tmp_path / "nothere.tif"
    (tmp_path / "bad.tif").write_bytes(b"II*\x00junk")
    with pytest.raises(StackError, match=r"^--hr .*bad\.tif: ") as info:
        read_metadata(tmp_path / "bad.tif", role="--hr")
    assert not info.value.reason.startswith("--hr") and "bad.tif" in info.value.reason
    # with_role keeps the first role (the innermost caller knows best).
    assert str(info.value.with_role("--truth")).startswith("--hr ")


def test_library_exceptions_become_stack_errors_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "z.tif"
    smooth = (np.arange(4 * 16 * 16).reshape(4, 16, 16) % 50).astype(np.uint16)
    tifffile.imwrite(path, smooth, compression="zlib", metadata=None, photometric="minisblack")
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        off, count = tif.pages[1].dataoffsets[0], tif.pages[1].databytecounts[0]
    data[off : off + count] = bytes(range(7, 7 + count))  # not a deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(StackError, match=r"z\.tif: corrupt compressed pixel data"):
        read_stack(path)
    # Whatever tifffile raises (here a codec it cannot import), the caller gets a StackError.
    tifffile.imwrite(path, smooth, metadata=None, photometric="minisblack")
    for exc, want in [
        (ModuleNotFoundError("No module named 'imagecodecs'", name="imagecodecs"),
         "needs the Python package 'imagecodecs'"),
        (RuntimeError("incompatible keyframe"), r"damaged or unsupported TIFF \(RuntimeError"),
        (MemoryError(), "not enough memory"),
        (ZeroDivisionError("division by zero"), "ZeroDivisionError"),
        (struct.error("unpack requires a buffer"), r"struct\.error"),
        (OSError("failed to read 40960 bytes, got 15354"), "truncated TIFF: failed to read"),
    ]:  # fmt: skip

        def boom(*args, _exc=exc, **kwargs):
            raise _exc

        monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", boom)
        with pytest.raises(StackError, match=rf"z\.tif: .*{want}"):
            read_stack(path, memmap=False, role="--lr")
    monkeypatch.undo()


def test_unknown_compression_and_unsupported_pixel_types(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", np.ones((2, 8, 8), np.complex64))
    with pytest.raises(StackError, match=r"c\.tif: pixel type complex64 is not supported"):
        read_stack(tmp_path / "c.tif")
    tifffile.imwrite(tmp_path / "b.tif", np.ones((2, 8, 8), bool))
    with pytest.raises(StackError, match=r"b\.tif: pixel type bool is not supported"):
        read_stack(tmp_path / "b.tif")


def test_truncated_export_is_refused_not_read_as_fewer_frames(tmp_path):
    path = tmp_path / "fused.tif"
    write_stack(path, np.zeros((20, 16, 32), np.float32), {"method": "bicubic"})
    data = path.read_bytes()
    (tmp_path / "half.tif").write_bytes(data[: len(data) // 2])
    for memmap in (True, False):
        with pytest.raises(StackError, match=r"half\.tif: truncated"):
            read_stack(tmp_path / "half.tif", memmap=memmap)


def test_writers_record_the_frame_count_and_fewer_pages_are_refused(tmp_path, stack):
    write_stack(tmp_path / "a.tif", stack)
    with StackWriter(tmp_path / "b.tif", (5, 8, 12), np.float32) as out:
        for t in range(3):
            out.write(stack[t], index=t)
    for name, n in (("a.tif", 5), ("b.tif", 3)):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert json.loads(tif.pages.first.description)["n_frames"] == n
        assert "n_frames" not in read_metadata(tmp_path / name)  # structural, like shape
    # An export whose pages were lost: a copy keeping only the first 2 of 5 pages' IFD chain.
    data = bytearray((tmp_path / "a.tif").read_bytes())
    ifds = _ifds(tmp_path / "a.tif")
    struct.pack_into("<I", data, _next_ifd_field(data, ifds[1]), 0)
    (tmp_path / "cut.tif").write_bytes(bytes(data))
    with pytest.raises(StackError, match=r"cut\.tif: truncated: its metadata declares 5 frames "
                       r"but the file holds only 2 page"):  # fmt: skip
        read_stack(tmp_path / "cut.tif")


def test_mixed_page_sizes_name_the_page(tmp_path):
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as w:
        for i in range(20):
            w.write(np.zeros((16, 32) if i < 10 else (8, 8), np.uint16), metadata=None)
    with pytest.raises(StackError, match=r"mixed\.tif: mixed page sizes: page 10 is 8x8 uint16 "
                       r"but page 0 is 16x32 uint16"):  # fmt: skip
        read_stack(path)


def test_ifd_loop_is_refused(tmp_path):
    path = tmp_path / "loop.tif"
    with tifffile.TiffWriter(path) as w:
        for i in range(3):
            w.write(np.full((8, 8), i, np.uint16), metadata=None)
    data = bytearray(path.read_bytes())
    ifds = _ifds(path)
    struct.pack_into("<I", data, _next_ifd_field(data, ifds[2]), ifds[0])
    path.write_bytes(bytes(data))
    with pytest.raises(StackError, match=r"loop\.tif: damaged TIFF: the chain of pages loops"):
        read_stack(path)


def _patch_size(path, width, height):
    data = bytearray(path.read_bytes())
    for ifd in _ifds(path):
        (count,) = struct.unpack_from("<H", data, ifd)
        for i in range(count):
            entry = ifd + 2 + 12 * i
            code, kind = struct.unpack_from("<HH", data, entry)
            value = {256: width, 257: height, 278: height}.get(code)
            if value is not None:
                fmt = "<I" if kind == 4 else "<H"
                struct.pack_into(fmt, data, entry + 8, value)
    path.write_bytes(bytes(data))


def test_memory_bombs_are_refused_before_allocating(tmp_path, monkeypatch):
    # A few-hundred-byte header declaring 2 frames of 60000 x 60000: uncompressed, the data
    # is not in the file; compressed, it would need 6.7 GiB: more than allowed (limit lowered
    # to 1 GiB here so the test does not depend on this machine's memory).
    tifffile.imwrite(
        tmp_path / "raw.tif", np.zeros((2, 4, 4), np.uint8), metadata=None, photometric="minisblack"
    )
    _patch_size(tmp_path / "raw.tif", 60000, 60000)
    with pytest.raises(StackError, match=r"raw\.tif: truncated or damaged TIFF: page 0 stores "
                       r"16 bytes of pixel data, but a 60000x60000 uint8 frame needs"):  # fmt: skip
        read_stack(tmp_path / "raw.tif")
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((2, 4, 4), np.uint8), compression="zlib",
                     metadata=None, photometric="minisblack")  # fmt: skip
    _patch_size(tmp_path / "z.tif", 60000, 60000)
    # _check_memory looks the limit up in core.io.checks, so patch it there.
    monkeypatch.setattr(io_checks, "memory_limit_bytes", lambda: 2**30)
    with pytest.raises(StackError, match=r"z\.tif: reading \(2, 60000, 60000\) uint8 would need "
                       r"6.71 GiB of memory, more than the 1 GiB allowed"):  # fmt: skip
        read_stack(tmp_path / "z.tif")
    # ImageJ: 400 images declared, stored contiguously after one page, in a 3 kB file.
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((400, 8, 8), np.uint16), imagej=True)
    (tmp_path / "ijcut.tif").write_bytes((tmp_path / "ij.tif").read_bytes()[:3000])
    with pytest.raises(StackError, match=r"ijcut\.tif: (truncated|inconsistent)"):
        read_stack(tmp_path / "ijcut.tif")
    assert core_io.memory_limit_bytes() >= 2**20


def test_memory_limit_comes_from_the_machine():
    monkeypatch_free = core_io.MAX_READ_FRACTION
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert core_io.memory_limit_bytes() == int(total * monkeypatch_free)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_special_files_are_refused_without_opening_them(tmp_path):
    fifo = tmp_path / "x.tif"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: the old hang
    old = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("read_stack opened the FIFO"))
    signal.alarm(10)
    try:
        for call in (read_stack, read_metadata):
            with pytest.raises(StackError, match=r"x\.tif: is a named pipe \(FIFO\), not a file"):
                call(fifo)
        os.symlink("/dev/null", tmp_path / "null.tif")
        with pytest.raises(StackError, match=r"null\.tif: is a character device"):
            read_stack(tmp_path / "null.tif")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(StackError, match=r"empty\.tif: empty file \(0 bytes\)"):
        read_stack(tmp_path / "empty.tif")
    os.symlink("self.tif", tmp_path / "self.tif")
    with pytest.raises(StackError, match=r"self\.tif: cannot be read: Too many levels"):
        read_stack(tmp_path / "self.tif")


def test_folder_entries_that_are_not_frames_are_reported(tmp_path, stack):
    for t in range(3):
        tifffile.imwrite(tmp_path / f"f{t}.tif", stack[t])
    (tmp_path / "notes.txt").write_text("camera settings")
    with pytest.warns(StackWarning, match=r"ignored 1 file\(s\) without a \.tif/\.tiff suffix: "
                      r"notes\.txt"):  # fmt: skip
        assert read_stack(tmp_path).shape == (3, 8, 12)
    (tmp_path / "f3.tif").mkdir()
    os.symlink("f4.tif", tmp_path / "f4.tif")
    with pytest.raises(StackError, match=r"folder entries that cannot be read as frames: "
                       r"f3\.tif \(a folder\), f4\.tif \(Too many levels"):  # fmt: skip
        read_stack(tmp_path)


def test_one_series_per_page_reads_as_one_stack(tmp_path, stack):
    # TiffWriter.write() in a loop gives every page its own shaped series; all were once read
    # as the first frame only.
    with tifffile.TiffWriter(tmp_path / "loop.tif") as w:
        for frame in stack:
            w.write(frame)
    np.testing.assert_array_equal(read_stack(tmp_path / "loop.tif"), stack)
