"""npe2 contributions without a window: manifest, reader, writer, sample data, change views."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

pytest.importorskip("napari")

from napari.components import ViewerModel  # noqa: E402
from napari.layers import Image  # noqa: E402

from napari_xfusion._napari._layers import FrameChange, lr_overlay_transform  # noqa: E402
from napari_xfusion._napari._reader import get_reader  # noqa: E402
from napari_xfusion._napari._sample import make_sample, sample_small  # noqa: E402
from napari_xfusion._napari._writer import write_image  # noqa: E402
from napari_xfusion.core.io import read_metadata, read_stack  # noqa: E402


def test_manifest_is_valid_and_names_every_contribution():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-xfusion")
    contributions = manifest.contributions
    widgets = {w.display_name for w in contributions.widgets}
    assert widgets == {"Fusion", "Attention", "Metrics", "Study", "Fine-tune", "Register cameras"}
    assert {s.key for s in contributions.sample_data} == {"keyhole_small", "keyhole_full"}
    assert contributions.readers[0].accepts_directories
    assert contributions.writers[0].layer_types == ["image"]
    # Every command resolves to something callable.
    for command in contributions.commands:
        module, _, name = command.python_name.partition(":")
        assert callable(getattr(__import__(module, fromlist=[name]), name)), command.id


def test_writer_reader_round_trip_keeps_layer_and_metadata(tmp_path):
    data = np.random.default_rng(0).random((5, 16, 24)).astype(np.float32)
    attributes = {
        "name": "fused [bayesian]",
        "scale": (1.0, 2.0, 2.0),
        "translate": (0.0, 0.5, 0.5),
        "metadata": {"xfusion": {"role": "fused", "method": "bayesian", "frames_done": [0, 1]}},
        "rgb": False,
        "multiscale": False,
    }
    (written,) = write_image(str(tmp_path / "out"), data, attributes)
    assert written.endswith("out.tif")
    reader = get_reader(written)
    assert reader is not None
    (layer_data,) = reader(written)
    stack, kwargs, kind = layer_data
    assert kind == "image"
    np.testing.assert_array_equal(stack, data)
    assert kwargs["name"] == "fused [bayesian]"
    assert kwargs["scale"] == (1.0, 2.0, 2.0)
    assert kwargs["translate"] == (0.0, 0.5, 0.5)
    assert kwargs["metadata"]["xfusion"]["method"] == "bayesian"
    assert kwargs["contrast_limits"] == (0.0, 1.0)
    # A layer made from the reader's output writes back identically.
    layer = Image(stack, **kwargs)
    (again,) = write_image(str(tmp_path / "again.tif"), layer.data, layer._get_state())
    assert read_metadata(again)["xfusion"] == read_metadata(written)["xfusion"]


def test_writer_stores_2d_layers_as_one_frame_and_refuses_rgb(tmp_path):
    (path,) = write_image(str(tmp_path / "one.tiff"), np.ones((4, 6), np.uint16), {"name": "x"})
    assert read_stack(path).shape == (1, 4, 6)
    with pytest.raises(ValueError, match="RGB"):
        write_image(str(tmp_path / "rgb.tif"), np.zeros((4, 6, 3), np.uint8), {"rgb": True})


def test_reader_reads_foreign_tiffs_folders_and_hyperstacks(tmp_path):
    stack = np.arange(3 * 8 * 12, dtype=np.uint16).reshape(3, 8, 12)
    tifffile.imwrite(tmp_path / "camera.tif", stack, photometric="minisblack")
    ((data, kwargs, _),) = get_reader(str(tmp_path / "camera.tif"))(str(tmp_path / "camera.tif"))
    np.testing.assert_array_equal(data, stack)
    assert kwargs["name"] == "camera" and "xfusion" not in kwargs["metadata"]

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (10, 2, 1):  # natural order: 1, 2, 10
        tifffile.imwrite(folder / f"f{i}.tif", np.full((8, 12), i, np.uint16))
    ((data, kwargs, _),) = get_reader(str(folder))(str(folder))
    assert data[:, 0, 0].tolist() == [1, 2, 10]
    assert kwargs["name"] == "frames"

    hyper = np.zeros((4, 1, 8, 12), np.float32)  # T, C=1, Y, X
    tifffile.imwrite(tmp_path / "hyper.tif", hyper, imagej=True, metadata={"axes": "TCYX"})
    ((data, _, _),) = get_reader(str(tmp_path / "hyper.tif"))(str(tmp_path / "hyper.tif"))
    assert data.shape == (4, 8, 12)


def test_reader_declines_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(empty)) is None
    assert get_reader([str(tmp_path / "notes.txt"), str(tmp_path / "x.tif")]) is None


def test_sample_layers_overlay_and_carry_roles():
    truth, keys, lr = make_sample(12, (32, 64), key_step=5, noise_psnr=30.0, seed=3)
    assert truth[0].shape == (12, 32, 64) and truth[0].dtype == np.float32
    assert lr[0].shape == (12, 8, 16)
    np.testing.assert_array_equal(keys[0], truth[0][[0, 5, 10]])
    assert [layer[1]["metadata"]["xfusion"]["role"] for layer in (truth, keys, lr)] == [
        "truth",
        "hr_keys",
        "lr",
    ]
    assert keys[1]["metadata"]["xfusion"]["key_indices"] == [0, 5, 10]
    assert keys[1]["scale"] == (5.0, 1.0, 1.0)  # key i shows at LR time 5 i
    assert lr[1]["metadata"]["xfusion"]["b0"] > 0
    assert 28 < lr[1]["metadata"]["xfusion"]["lr_psnr"] < 32
    # The noisy LR is the binned truth plus zero-mean noise.
    binned = truth[0].reshape(12, 8, 4, 16, 4).mean(axis=(2, 4))
    assert abs(float((lr[0] - binned).mean())) < 0.01
    # Deterministic: the same seed gives the same sample.
    np.testing.assert_array_equal(
        make_sample(12, (32, 64), key_step=5, noise_psnr=30.0, seed=3)[2][0], lr[0]
    )


def test_small_sample_is_quick_and_fits_the_methods():
    truth, keys, lr = sample_small()
    assert truth[0].shape[1] == 4 * lr[0].shape[1] and truth[0].shape[2] == 4 * lr[0].shape[2]
    assert keys[0].shape[0] == len(keys[1]["metadata"]["xfusion"]["key_indices"])


def test_lr_overlay_transform_centres_lr_pixels_on_hr_blocks():
    scale, translate = lr_overlay_transform((1.0, 2.0, 3.0), (0.0, 10.0, 20.0))
    assert scale == (1.0, 8.0, 12.0)
    # LR pixel 0 covers HR pixels 0..3, whose centre is HR pixel 1.5.
    assert translate == (0.0, 10.0 + 1.5 * 2.0, 20.0 + 1.5 * 3.0)


def test_change_view_is_lazy_and_follows_the_source():
    viewer = ViewerModel()
    data = np.stack([np.full((4, 5), v, np.float32) for v in (1.0, 2.0, 3.0, 0.0)])
    source = viewer.add_image(data, name="s")
    ratio = FrameChange(source, "ratio")
    diff = FrameChange(source, "difference")
    assert ratio.shape == (4, 4, 5) and ratio.dtype == np.float32 and ratio.ndim == 3
    np.testing.assert_array_equal(ratio[0], 1.0)  # no previous frame
    np.testing.assert_array_equal(ratio[2], 1.5)
    np.testing.assert_array_equal(diff[3], -3.0)
    np.testing.assert_array_equal(ratio[1:3, 0, :2], [[2.0, 2.0], [1.5, 1.5]])
    np.testing.assert_array_equal(ratio[..., 0][:, 0], [1.0, 2.0, 1.5, 0.0])
    source.data[2] = 6.0  # in place, as a fused layer fills
    np.testing.assert_array_equal(ratio[2], 3.0)
    # Fused layers: frames not done yet show no change.
    source.metadata["xfusion"] = {"role": "fused", "frames_done": [0, 1]}
    np.testing.assert_array_equal(ratio[2], 1.0)
    np.testing.assert_array_equal(ratio[1], 2.0)
    # A view added to napari slices like an array.
    view = viewer.add_image(ratio, name="r", contrast_limits=(0.5, 1.5))
    viewer.dims.set_point(0, 1)
    assert np.asarray(view.data[1]).mean() == 2.0
    with pytest.raises(ValueError, match="unknown change view"):
        FrameChange(source, "log")


def test_open_demo_declines_without_napari(monkeypatch):
    import sys

    from napari_xfusion._napari.demo import open_demo

    monkeypatch.setitem(sys.modules, "napari", None)  # "import napari" raises ImportError
    assert open_demo() is False


def test_reader_refuses_damaged_files_and_checks_our_metadata(tmp_path):
    # issue 13, items 5-9 through the napari reader: a StackError naming the file, no traceback.
    from napari_xfusion.core.io import StackError, write_stack

    good = np.zeros((3, 8, 12), np.float32)
    write_stack(tmp_path / "a.tif", good)
    data = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    reader = get_reader(str(tmp_path / "cut.tif"))
    with pytest.raises(StackError, match=r"cut\.tif: truncated"):
        reader(str(tmp_path / "cut.tif"))
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.tif")
        with pytest.raises(StackError, match=r"pipe\.tif: is a named pipe"):
            get_reader(str(tmp_path / "pipe.tif"))(str(tmp_path / "pipe.tif"))
    for key, value, match in [
        ("key_indices", [0, 5.7], r"keys\.tif metadata key_indices: entry 1 is 5\.7"),
        ("key_indices", {"a": 1}, r"keys\.tif metadata key_indices: .*dict"),
        ("frame_indices", ["0", 1, 2], r"keys\.tif metadata frame_indices: entry 0 is '0'"),
        ("frame_indices", [0, -5, 2], r"frame_indices: entry 1 is -5"),
        ("frame_indices", [0, 1], r"frame_indices: 2 indices for a 3-frame stack"),
        ("separation", 2.5, r"keys\.tif metadata separation: the value is 2\.5"),
    ]:
        write_stack(tmp_path / "keys.tif", good, {"xfusion": {"role": "hr_keys", key: value}})
        with pytest.raises(StackError, match=match):
            get_reader(str(tmp_path / "keys.tif"))(str(tmp_path / "keys.tif"))
    write_stack(tmp_path / "keys.tif", good, {"xfusion": {"key_indices": [0, 5.0, 9]}})
    ((_, kwargs, _),) = get_reader(str(tmp_path / "keys.tif"))(str(tmp_path / "keys.tif"))
    assert kwargs["metadata"]["xfusion"]["key_indices"] == [0, 5, 9]
    # Layer attributes of the wrong type or value are ignored, not trusted.
    layer = {"name": 5, "scale": [1, "x", 2], "translate": [0, float("inf"), 0]}
    write_stack(tmp_path / "odd.tif", good, {"layer": layer})
    ((_, kwargs, _),) = get_reader(str(tmp_path / "odd.tif"))(str(tmp_path / "odd.tif"))
    assert kwargs["name"] == "odd" and "scale" not in kwargs and "translate" not in kwargs


def test_an_export_without_its_normalisation_opens_as_plain_pixels(tmp_path):
    """A uint16 stack that looks like an export but lacks the clip values cannot be mapped to
    [0, 1]: the reader opens its pixels as they are and says why it is not a fused result."""
    from napari_xfusion._napari._reader import read_layers
    from napari_xfusion.core.io import write_stack

    path = tmp_path / "old_export.tif"
    data = (np.arange(3 * 8 * 16, dtype=np.uint16) * 7).reshape(3, 8, 16)
    write_stack(path, data, {"method": "bicubic", "frame_indices": [0, 1, 2]})
    ((stack, kwargs, kind),) = read_layers(str(path))
    assert kind == "image" and stack.dtype == np.uint16
    np.testing.assert_array_equal(stack, data)
    assert "normalisation" in kwargs["metadata"]["not_a_fused_result"]
