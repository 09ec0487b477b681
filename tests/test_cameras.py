"""Camera metadata formats (Phantom .cine / XML, Shimadzu .ini), frame times and matching."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from napari_xfusion.core.cameras import (
    CameraMetadataError,
    FrameTimes,
    TimingError,
    frame_times_from_rate,
    match_frames,
    read_cine,
    read_frame_times,
    write_cine,
    write_phantom_xml,
    write_shimadzu_ini,
)
from napari_xfusion.core.cameras.cine import ns_to_time64, time64_to_ns
from napari_xfusion.core.io import StackError

PHANTOM_RATE = 71428.571  # TMX7510 at the paper's 14 us interval
SHIMADZU_RATE = 5e6


def _hr_times(n=9, first=-4, delay=1.234567e-6, **kw):
    return frame_times_from_rate(n, PHANTOM_RATE, trigger_delay_s=delay, first_frame_number=first,
                                 source="hr", camera="Phantom", **kw)  # fmt: skip


# -- FrameTimes / rates --------------------------------------------------------------------


def test_frame_times_from_rate_puts_frame_zero_at_the_delay():
    t = frame_times_from_rate(5, 1e6, trigger_delay_s=2e-7, first_frame_number=-2)
    assert t.frame_numbers.tolist() == [-2, -1, 0, 1, 2]
    assert t.trigger_frame == 2
    assert t.times_s[2] == pytest.approx(2e-7, abs=1e-15)
    assert t.interval_s == pytest.approx(1e-6)
    assert t.rate_hz == pytest.approx(1e6)
    assert len(t) == 5


@pytest.mark.parametrize("rate", [0, -5, float("nan")])
def test_frame_times_from_rate_refuses_bad_rates(rate):
    with pytest.raises(CameraMetadataError, match="frame rate"):
        frame_times_from_rate(4, rate)


def test_frame_times_refuse_non_increasing_times_naming_the_frame():
    with pytest.raises(CameraMetadataError, match=r"lr\.ini.*not increasing.*frame 3"):
        FrameTimes(times_s=[0.0, 1.0, 2.0, 1.5], frame_numbers=[1, 2, 3, 4], source="lr.ini")
    with pytest.raises(CameraMetadataError, match="3 frame times but 2 frame numbers"):
        FrameTimes(times_s=[0.0, 1.0, 2.0], frame_numbers=[1, 2], source="x")


def test_since_first_event_rezeroes_and_refuses_without_flags():
    t = _hr_times()
    flagged = FrameTimes(t.times_s, t.frame_numbers, "hr.xml", event=np.arange(9) >= 3)
    z = flagged.since_first_event()
    assert z.times_s[3] == 0.0
    assert np.allclose(np.diff(z.times_s), np.diff(t.times_s))
    with pytest.raises(CameraMetadataError, match="hr: has no event flags"):
        t.since_first_event()


def test_check_count_names_file_and_counts():
    with pytest.raises(CameraMetadataError, match=r"hr: holds times of 9 frames.*has 10 frames"):
        _hr_times().check_count(10)


# -- Phantom .cine -------------------------------------------------------------------------


def test_time64_round_trip_is_exact_to_a_nanosecond():
    for ns in (0, 1, 999_999_999, 1_767_225_600_123_456_789):
        assert abs(time64_to_ns(ns_to_time64(ns)) - ns) <= 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_cine_round_trip_images_and_times(tmp_path, dtype):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, np.iinfo(dtype).max, size=(9, 6, 10), dtype=dtype)
    times = _hr_times(exposure_s=1.0e-6)
    path = write_cine(tmp_path / "hr.cine", frames, times)
    got, t = read_cine(path)
    assert got.dtype == dtype and np.array_equal(got, frames)
    assert np.abs(t.times_s - times.times_s).max() < 1e-9  # ns
    assert t.frame_numbers.tolist() == list(range(-4, 5))
    assert t.trigger_frame == 4
    assert t.exposure_s == pytest.approx(1e-6, abs=1e-9)
    assert t.camera == "Phantom"
    only_times = read_frame_times(path, n_frames=9)
    assert np.array_equal(only_times.times_s, t.times_s)


def test_cine_layout_matches_the_documented_offsets(tmp_path):
    frames = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    times = frame_times_from_rate(2, 1000.0, first_frame_number=-1)
    raw = write_cine(tmp_path / "a.cine", frames, times).read_bytes()
    kind, header_size, comp, _ver, _fm, total, first_no, count = struct.unpack_from(
        "<2sHHHiIiI", raw, 0
    )
    off_bitmap, off_setup, off_offsets = struct.unpack_from("<III", raw, 24)
    assert (kind, header_size, comp, total, first_no, count) == (b"CI", 44, 0, 2, -1, 2)
    assert (off_bitmap, off_setup) == (44, 84)
    bi_size, width, height, _planes, bits = struct.unpack_from("<IiiHH", raw, 44)
    assert (bi_size, width, height, bits) == (40, 4, 3, 16)
    assert raw[off_setup + 140 : off_setup + 142] == b"ST"
    setup_length = struct.unpack_from("<H", raw, off_setup + 142)[0]
    assert struct.unpack_from("<I", raw, off_setup + 768)[0] == 1000  # FrameRate
    size, tag = struct.unpack_from("<IH", raw, off_setup + setup_length)
    assert (size, tag) == (8 + 8 * 2, 1002)
    pointer = struct.unpack_from("<q", raw, off_offsets)[0]
    annotation, image_size = struct.unpack_from("<II", raw, pointer)
    assert (annotation, image_size) == (8, 24)
    first_row_in_file = np.frombuffer(raw, "<u2", 4, pointer + annotation)
    assert first_row_in_file.tolist() == frames[0, -1].tolist()  # bottom-up rows


def _good_cine(tmp_path, name="hr.cine"):
    frames = np.zeros((3, 4, 4), dtype=np.uint8)
    return write_cine(tmp_path / name, frames, _hr_times(n=3, first=0))


def test_cine_errors_name_file_and_field(tmp_path):
    path = _good_cine(tmp_path)
    raw = bytearray(path.read_bytes())

    bad = tmp_path / "magic.cine"
    bad.write_bytes(b"XX" + bytes(raw[2:]))
    with pytest.raises(CameraMetadataError, match=r"magic\.cine: field Type .*expected b'CI'"):
        read_frame_times(bad)

    short = tmp_path / "short.cine"
    short.write_bytes(bytes(raw[:30]))
    with pytest.raises(CameraMetadataError, match=r"short\.cine: truncated.*CINEFILEHEADER"):
        read_frame_times(short)

    cut = tmp_path / "cut.cine"
    cut.write_bytes(bytes(raw[: len(raw) - 10]))
    with pytest.raises(CameraMetadataError, match=r"cut\.cine: truncated.*image 2"):
        read_cine(cut)

    offsets = bytearray(raw)
    struct.pack_into("<I", offsets, 32, len(raw) + 100)
    far = tmp_path / "far.cine"
    far.write_bytes(bytes(offsets))
    with pytest.raises(CameraMetadataError, match=r"far\.cine: field OffImageOffsets"):
        read_frame_times(far)

    block = bytearray(raw)
    setup_length = struct.unpack_from("<H", raw, 84 + 142)[0]
    struct.pack_into("<I", block, 84 + setup_length, 4)
    tag = tmp_path / "tag.cine"
    tag.write_bytes(bytes(block))
    with pytest.raises(CameraMetadataError, match=r"tag\.cine: tagged block .*BlockSize 4"):
        read_frame_times(tag)

    with pytest.raises(CameraMetadataError, match=r"hr\.cine: holds times of 3 frames"):
        read_frame_times(path, n_frames=4)
    with pytest.raises(CameraMetadataError, match="no such file"):
        read_frame_times(tmp_path / "missing.cine")
    assert issubclass(CameraMetadataError, StackError)


def test_cine_without_time_block_uses_the_frame_rate(tmp_path):
    path = _good_cine(tmp_path)
    raw = bytearray(path.read_bytes())
    setup_length = struct.unpack_from("<H", raw, 84 + 142)[0]
    struct.pack_into("<H", raw, 84 + setup_length + 4, 1500)  # retag: unknown block type
    path.write_bytes(bytes(raw))
    t = read_frame_times(path)
    assert np.allclose(np.diff(t.times_s), 1 / round(PHANTOM_RATE))


def test_compressed_cine_images_are_refused(tmp_path):
    path = _good_cine(tmp_path, "packed.cine")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, 4, 1)
    path.write_bytes(bytes(raw))
    assert len(read_frame_times(path)) == 3  # the times are still readable
    with pytest.raises(CameraMetadataError, match=r"packed\.cine: field Compression is 1"):
        read_cine(path)


# -- Phantom XML ---------------------------------------------------------------------------

# Written by hand in the structure the paper's reference code reads from real PCC exports.
REAL_LOOKING_XML = """<?xml version="1.0"?>
<chd>
  <CineFileHeader><FirstImageNo>-2</FirstImageNo><ImageCount>5</ImageCount></CineFileHeader>
  <CameraSetup><FrameRateDouble>71428.571429</FrameRateDouble><Gamma>0</Gamma>
    <ShutterNs>13000</ShutterNs></CameraSetup>
  <TIMEBLOCK>
    <Date Frame="-2">Tue Jun 13 2023</Date><Time Frame="-2">23:59:59.999 972.00</Time>
    <Date Frame="-1">Tue Jun 13 2023</Date><Time Frame="-1">23:59:59.999 986.00 E</Time>
    <Date Frame="0">Wed Jun 14 2023</Date><Time Frame="0">00:00:00.000 000.00 E</Time>
    <Date Frame="1">Wed Jun 14 2023</Date><Time Frame="1">00:00:00.000 014.00 E S</Time>
    <Date Frame="2">Wed Jun 14 2023</Date><Time Frame="2">00:00:00.000 028.01</Time>
  </TIMEBLOCK>
</chd>
"""


def test_phantom_xml_hand_written_file(tmp_path):
    path = tmp_path / "hr.xml"
    path.write_text(REAL_LOOKING_XML)
    t = read_frame_times(path, n_frames=5)
    assert t.frame_numbers.tolist() == [-2, -1, 0, 1, 2]
    assert t.trigger_frame == 2
    ns = np.round(t.times_s * 1e9).astype(int).tolist()
    assert ns == [-28_000, -14_000, 0, 14_000, 28_010]  # across midnight, 10 ns resolution
    assert t.event.tolist() == [False, True, True, True, False]
    assert t.exposure_s == pytest.approx(13e-6)
    assert t.since_first_event().times_s[1] == 0.0


def test_phantom_xml_is_tolerant_of_case_namespaces_and_relative_times(tmp_path):
    path = tmp_path / "rel.XML"
    path.write_text(
        '<ph:chd xmlns:ph="urn:x"><ph:TimeBlock>'
        '<ph:time frame="0">0</ph:time><ph:time frame="1">14 us</ph:time>'
        '<ph:time frame="2">2.8e-05 E</ph:time></ph:TimeBlock></ph:chd>'
    )
    t = read_frame_times(path)
    assert np.allclose(t.times_s, [0, 14e-6, 28e-6])
    assert t.event.tolist() == [False, False, True]


def test_phantom_xml_round_trip(tmp_path):
    times = _hr_times(exposure_s=12e-6)
    flags = np.arange(9) >= 5
    path = write_phantom_xml(tmp_path / "hr.xml", times, event=flags)
    t = read_frame_times(path)
    # The format's 10 ns resolution (rounded once to ns, once to 10 ns).
    assert np.abs(t.times_s - times.times_s).max() <= 6e-9
    assert t.frame_numbers.tolist() == times.frame_numbers.tolist()
    assert t.event.tolist() == flags.tolist()
    assert t.trigger_frame == times.trigger_frame
    assert t.exposure_s == pytest.approx(12e-6)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("<chd><CameraSetup/></chd>", r"bad\.xml: has no TIMEBLOCK"),
        ("<chd><TIMEBLOCK><Time>12:00:00.000</Time></TIMEBLOCK></chd>", r"bad\.xml: TIMEBLOCK "
         r"Time with Frame=None"),
        ('<chd><TIMEBLOCK><Time Frame="0">noon</Time></TIMEBLOCK></chd>',
         r"bad\.xml: TIMEBLOCK Time of frame 0 is 'noon'"),
        ('<chd><TIMEBLOCK><Time Frame="0">0</Time><Time Frame="1">-1e-6</Time></TIMEBLOCK>'
         "</chd>", r"bad\.xml: frame times are not increasing: frame 1"),
        ('<chd><CineFileHeader><ImageCount>3</ImageCount></CineFileHeader><TIMEBLOCK>'
         '<Time Frame="0">0</Time></TIMEBLOCK></chd>', r"bad\.xml: field ImageCount is 3"),
        ("<chd><TIMEBLOCK>", r"bad\.xml: is not well-formed XML"),
        ('<?xml version="1.0"?><!DOCTYPE chd [<!ENTITY a "aaaa">]><chd>&a;</chd>',
         r"bad\.xml: declares a DOCTYPE or ENTITY"),
    ],
)  # fmt: skip
def test_phantom_xml_errors(tmp_path, text, pattern):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(CameraMetadataError, match=pattern):
        read_frame_times(path)


# -- Shimadzu .ini -------------------------------------------------------------------------

REAL_LOOKING_INI = """[CAMERA_INFO]
CameraName=HPV-X2

[REC_INFO]
RecSpeed=200ns
RecFrame=4

[PLAY_INFO]
FrameStart=1
FrameStop=4

[IMAGE_INFO_1]
ImageRelative=0
[IMAGE_INFO_2]
ImageRelative=200
[IMAGE_INFO_3]
ImageRelative=400
[IMAGE_INFO_4]
ImageRelative=601
"""


def test_shimadzu_ini_hand_written_file(tmp_path):
    path = tmp_path / "lr.ini"
    path.write_text(REAL_LOOKING_INI)
    t = read_frame_times(path, n_frames=4)
    assert t.frame_numbers.tolist() == [1, 2, 3, 4]
    assert np.round(t.times_s * 1e9).astype(int).tolist() == [0, 200, 400, 601]
    assert t.camera.startswith("Shimadzu")


@pytest.mark.parametrize(
    ("speed", "interval"),
    [("200ns", 2e-7), ("0.2 us", 2e-7), ("5Mfps", 2e-7), ("1,000,000 fps", 1e-6),
     ("500 kfps", 2e-6)],
)  # fmt: skip
def test_shimadzu_rec_speed_units(tmp_path, speed, interval):
    path = tmp_path / "lr.ini"
    path.write_text(f"[REC_INFO]\nRecSpeed={speed}\nRecFrame=3\nTriggerDelay=50ns\n")
    t = read_frame_times(path)
    assert np.allclose(t.times_s, 5e-8 + interval * np.arange(3), rtol=0, atol=1e-15)


def test_shimadzu_round_trip(tmp_path):
    times = frame_times_from_rate(16, SHIMADZU_RATE, first_frame_number=-3)
    path = write_shimadzu_ini(tmp_path / "lr.ini", times)
    t = read_frame_times(path)
    assert np.abs(t.times_s - times.times_s).max() < 1e-9
    assert t.trigger_frame == times.trigger_frame
    assert t.frame_numbers.tolist() == list(range(1, 17))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("[REC_INFO]\nRecFrame=3\n", r"lr\.ini: \[REC_INFO\] has no RecSpeed"),
        ("[REC_INFO]\nRecSpeed=200\nRecFrame=3\n", r"lr\.ini: field RecSpeed is '200' without"),
        ("[REC_INFO]\nRecSpeed=fast\nRecFrame=3\n", r"lr\.ini: field RecSpeed is 'fast'"),
        ("[REC_INFO]\nRecSpeed=200ns\n", r"lr\.ini: \[REC_INFO\] has no RecFrame"),
        ("[REC_INFO]\nRecSpeed=200ns\nRecFrame=two\n", r"lr\.ini: field RecFrame is 'two'"),
        ("[OTHER]\nA=1\n", r"lr\.ini: has no \[REC_INFO\]"),
        ("RecSpeed=200ns\n", r"lr\.ini: is not a valid \.ini"),
        ("[REC_INFO]\nRecSpeed=200ns\nRecFrame=2\n[IMAGE_INFO_1]\nImageRelative=0\n",
         r"lr\.ini: \[IMAGE_INFO_2\] has no ImageRelative"),
        ("[REC_INFO]\nRecSpeed=200ns\nRecFrame=2\n[IMAGE_INFO_1]\nImageRelative=0\n"
         "[IMAGE_INFO_2]\nImageRelative=0\n", r"lr\.ini: frame times are not increasing"),
        ("[REC_INFO]\nRecSpeed=200ns\nRecFrame=2\n[IMAGE_INFO_1]\nImageRelative=0\n"
         "[IMAGE_INFO_2]\nImageRelative=2\n", r"lr\.ini: ImageRelative steps are 2 ns but "
         r"RecSpeed says 200 ns"),
        ("[REC_INFO]\nRecSpeed=200ns\nRecFrame=1\n[IMAGE_INFO_2]\nImageRelative=0\n",
         r"lr\.ini: has a section \[IMAGE_INFO_2\] but RecFrame is 1"),
    ],
)  # fmt: skip
def test_shimadzu_errors(tmp_path, text, pattern):
    path = tmp_path / "lr.ini"
    path.write_text(text)
    with pytest.raises(CameraMetadataError, match=pattern):
        read_frame_times(path)


def test_shimadzu_count_mismatch_with_the_stack(tmp_path):
    path = tmp_path / "lr.ini"
    path.write_text(REAL_LOOKING_INI)
    with pytest.raises(CameraMetadataError, match=r"lr\.ini: holds times of 4 frames"):
        read_frame_times(path, n_frames=5)


def test_unknown_suffix(tmp_path):
    with pytest.raises(CameraMetadataError, match=r"times\.txt: unknown camera metadata suffix"):
        read_frame_times(tmp_path / "times.txt")


# -- matching ------------------------------------------------------------------------------


def test_match_frames_with_offset_and_jitter():
    lr = frame_times_from_rate(300, 1e6, source="lr")  # 0 .. 299 us
    rng = np.random.default_rng(1)
    # HR keys every 14 LR frames, its clock 3.25 us behind, with +-50 ns of jitter.
    hr_true = np.arange(10, 290, 14) * 1e-6
    jitter = rng.uniform(-50e-9, 50e-9, hr_true.size)
    hr = FrameTimes(hr_true - 3.25e-6 + jitter, np.arange(hr_true.size), "hr")
    match = match_frames(hr, lr, offset_s=3.25e-6)
    assert match.lr_index.tolist() == list(range(10, 290, 14))
    assert np.allclose(match.residual_s, -jitter, atol=1e-12)
    assert np.allclose(match.residual_frames, -jitter / 1e-6)
    assert match.lr_interval_s == pytest.approx(1e-6)
    report = match.report()
    assert "HR frame 0 (#0) -> LR frame 10" in report and " ns " in report
    assert "max |residual|" in report


def test_match_frames_refuses_frames_outside_the_lr_recording():
    lr = frame_times_from_rate(50, 1e6, source="lr.ini")
    hr = frame_times_from_rate(6, 1e5, first_frame_number=-1, source="hr.xml")  # -10 .. 40 us
    with pytest.raises(TimingError, match=r"HR frame -1 \(index 0\) of hr\.xml at -10\.000 us.*"
                       r"matches no LR frame of lr\.ini.*outside the LR recording"):  # fmt: skip
        match_frames(hr, lr)
    kept = match_frames(hr, lr, drop_outside=True)
    assert kept.hr_index.tolist() == [1, 2, 3, 4, 5]
    assert kept.dropped.tolist() == [0]
    assert "1 HR frames recorded outside" in kept.report()


def test_match_frames_tolerance_and_duplicates():
    lr = frame_times_from_rate(20, 1e6, source="lr")
    hr = FrameTimes(np.array([2.0e-6, 5.4e-6]), np.array([0, 1]), "hr")
    match_frames(hr, lr, tolerance_frames=0.5)
    with pytest.raises(TimingError, match=r"HR frame 1 .* within 0\.3 LR frames.*0\.400 frames"):
        match_frames(hr, lr, tolerance_frames=0.3)
    fast = FrameTimes(np.array([2.0e-6, 2.2e-6]), np.array([7, 8]), "fast")
    with pytest.raises(TimingError, match="HR frames 7 and 8 of fast both match LR frame 2"):
        match_frames(fast, lr)


def test_read_write_pair_matches_end_to_end(tmp_path):
    """The simulated dual-camera case: Phantom XML (event-flagged) + Shimadzu ini."""
    lr_times = frame_times_from_rate(64, SHIMADZU_RATE, source="lr")
    write_shimadzu_ini(tmp_path / "lr.ini", lr_times)
    # The Phantom sees the Shimadzu's record signal from its frame 3 on; one HR frame per
    # 14 us = 70 LR frames would leave only one inside, so this HR runs at 1/(7 LR frames).
    hr_raw = frame_times_from_rate(12, SHIMADZU_RATE / 7, first_frame_number=-3,
                                   trigger_delay_s=-0.03e-6)  # fmt: skip
    event = (hr_raw.times_s >= -0.05e-6) & (hr_raw.times_s <= 64 / SHIMADZU_RATE)
    write_phantom_xml(tmp_path / "hr.xml", hr_raw, event=event)
    hr = read_frame_times(tmp_path / "hr.xml").since_first_event()
    lr = read_frame_times(tmp_path / "lr.ini")
    match = match_frames(hr, lr, drop_outside=True)
    assert match.lr_index.tolist() == [0, 7, 14, 21, 28, 35, 42, 49, 56]
    assert np.all(np.abs(match.residual_s) < 5e-9)


def test_hand_built_older_cine_with_tag_1001_and_top_down_rows(tmp_path):
    """A cine assembled byte by byte (not by write_cine): a short older SETUP (Length 1600),
    time + exposure records in tagged block 1001, an unknown block before it, 8-bit top-down
    rows (negative biHeight), an annotation of 12 bytes."""
    n, h, w = 3, 2, 4
    trigger_s, trigger_frac = 1_700_000_000, 1 << 31  # .5 s
    frames = np.arange(n * h * w, dtype=np.uint8).reshape(n, h, w)
    setup_len = 1600
    setup = bytearray(setup_len)
    struct.pack_into("<H", setup, 0, 1000)  # FrameRate16
    setup[140:142] = b"ST"
    struct.pack_into("<H", setup, 142, setup_len)
    struct.pack_into("<I", setup, 768, 100_000)  # FrameRate
    unknown = struct.pack("<IHH", 12, 1005, 0) + b"\0" * 4
    records = b"".join(
        struct.pack("<QI", (trigger_s << 32) | (trigger_frac + k * 42950), 4295)  # +10 us each
        for k in range(n)
    )
    tag = struct.pack("<IHH", 8 + len(records), 1001, 0) + records
    off_setup = 44 + 40
    off_offsets = off_setup + setup_len + len(unknown) + len(tag)
    annotation = 12
    first = off_offsets + 8 * n
    pointers = [first + k * (annotation + h * w) for k in range(n)]
    header = struct.pack("<2sHHHiIiIIIIQ", b"CI", 44, 0, 1, 0, n, 0, n, 44, off_setup,
                         off_offsets, (trigger_s << 32) | trigger_frac)  # fmt: skip
    bitmap = struct.pack("<IiiHHIIiiII", 40, w, -h, 1, 8, 0, h * w, 0, 0, 0, 0)
    body = b"".join(struct.pack("<I4sI", annotation, b"note", h * w) + f.tobytes() for f in frames)
    path = tmp_path / "old.cine"
    path.write_bytes(header + bitmap + setup + unknown + tag
                     + struct.pack(f"<{n}q", *pointers) + body)  # fmt: skip
    got, t = read_cine(path)
    assert np.array_equal(got, frames)
    assert np.round(t.times_s * 1e9).astype(int).tolist() == [0, 10_000, 20_000]
    assert t.exposure_s == pytest.approx(1e-6, rel=1e-4)
    assert t.trigger_frame == 0
    assert t.origin_unix_ns == trigger_s * 10**9 + 500_000_000


def test_cine_with_a_bad_image_size_names_the_image(tmp_path):
    path = _good_cine(tmp_path, "size.cine")
    raw = bytearray(path.read_bytes())
    pointer = struct.unpack_from("<q", raw, struct.unpack_from("<I", raw, 32)[0] + 8)[0]
    struct.pack_into("<I", raw, pointer + 4, 7)
    path.write_bytes(bytes(raw))
    with pytest.raises(CameraMetadataError, match=r"size\.cine: image 1 \(frame 1\): ImageSize"):
        read_cine(path)


def test_shifted_and_select_keep_times_and_origin_consistent():
    t = FrameTimes(np.array([0.0, 1e-6, 2e-6]), np.array([-1, 0, 1]), "x", trigger_frame=1,
                   origin_unix_ns=10**18)  # fmt: skip
    s = t.shifted(5e-6)
    assert np.allclose(s.times_s, t.times_s + 5e-6)
    assert s.origin_unix_ns == 10**18 - 5000  # the same instants on the clock
    sub = t.select([1, 2])
    assert sub.trigger_frame == 0 and sub.frame_numbers.tolist() == [0, 1]
    assert t.select([0, 2]).trigger_frame is None
    assert "3 frames" in t.describe()


def test_phantom_xml_in_utf16_cannot_hide_a_doctype(tmp_path):
    path = tmp_path / "wide.xml"
    text = '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE c [<!ENTITY a "x">]><c>&a;</c>'
    path.write_bytes(text.encode("utf-16"))
    with pytest.raises(CameraMetadataError, match=r"wide\.xml: declares a DOCTYPE"):
        read_frame_times(path)


def test_cine_too_large_for_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    from napari_xfusion.core.io import checks

    path = _good_cine(tmp_path, "big.cine")
    monkeypatch.setattr(checks, "memory_limit_bytes", lambda: 10)
    with pytest.raises(CameraMetadataError, match=r"big\.cine: 3 images of 4 x 4 x 8 bit"):
        read_cine(path)
    assert len(read_frame_times(path)) == 3  # times need no image memory


def test_match_frames_when_no_hr_frame_lies_inside_the_lr_recording():
    lr = frame_times_from_rate(10, 1e6, source="lr")
    hr = frame_times_from_rate(3, 1e4, trigger_delay_s=1e-3, source="hr")
    with pytest.raises(TimingError, match="no HR frame of hr lies within the LR recording"):
        match_frames(hr, lr, drop_outside=True)
    with pytest.raises(TimingError, match="at least 2 LR frames"):
        match_frames(hr, lr.select([0]))


def test_shimadzu_without_per_frame_times(tmp_path):
    times = frame_times_from_rate(5, 1e6)
    path = write_shimadzu_ini(tmp_path / "lr.ini", times, per_frame=False)
    assert "IMAGE_INFO" not in path.read_text()
    assert np.allclose(read_frame_times(path).times_s, times.times_s, atol=1e-15)


def test_refined_match_moves_keys_to_their_true_lr_frames():
    lr = frame_times_from_rate(40, 1e6, source="lr")
    hr = FrameTimes(np.array([5e-6, 15e-6, 25e-6]), np.array([0, 1, 2]), "hr")
    match = match_frames(hr, lr)
    moved = match.refined(0.7, len(lr))  # the images say: 0.7 frames later
    assert moved.lr_index.tolist() == [6, 16, 26]
    assert np.allclose(moved.residual_frames, 0.3)
    assert np.allclose(moved.residual_s, 0.3e-6)
    assert moved.offset_s == pytest.approx(0.7e-6)
    with pytest.raises(TimingError, match="outside the 40 LR frames"):
        match.refined(15.2, len(lr))
