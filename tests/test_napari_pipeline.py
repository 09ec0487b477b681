"""The GUI on the application layer: the registry's method list, a RunConfig per run (saved,
loaded, the CLI's), one export and one result table (round trips with the CLI), extras."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_xfusion import cli  # noqa: E402
from napari_xfusion.app.config import KeyRule, RunConfig  # noqa: E402
from napari_xfusion.core.io import read_metadata, read_stack, write_stack  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT_MS = 60000


def run_and_wait(widget, qtbot):
    assert widget.run(), widget.status.text()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_summary.error is None, widget.last_summary.error
    return widget.last_summary


def choose(widget, *methods):
    for name, box in widget.method_boxes.items():
        box.setChecked(name in methods)


@pytest.fixture
def sample_files(tmp_path, tiny_sample):
    """The tiny sample as the CLI's files: LR, HR keys (key_indices metadata), truth."""
    (truth, _, _), (keys, keys_kwargs, _), (lr, _, _) = tiny_sample
    key_indices = keys_kwargs["metadata"]["xfusion"]["key_indices"]
    folder = tmp_path / "data"
    folder.mkdir()
    paths = {"lr": folder / "lr.tif", "hr": folder / "keys.tif", "truth": folder / "truth.tif"}
    write_stack(paths["lr"], lr)
    write_stack(paths["hr"], keys, {"key_indices": key_indices})
    write_stack(paths["truth"], truth)
    return paths


def _open_files(viewer, paths):
    for role in ("truth", "hr", "lr"):
        viewer.open(str(paths[role]), plugin="napari-xfusion")


# --- (1) the method list is the registry ------------------------------------------------


def test_method_rows_come_from_the_registry(fusion_viewer):
    from napari_xfusion._napari._methods_panel import panel_options
    from napari_xfusion.methods.registry import available_methods

    _, widget = fusion_viewer
    specs = available_methods()
    assert list(widget.method_boxes) == list(specs)
    for name, spec in specs.items():
        assert (name in widget.weights) == spec.needs_weights
        for option in panel_options(spec):
            assert (name, option.name) in widget.methods_panel.option_widgets
    # Options set once per run (device) or carried by the MethodChoice (weights) get no row.
    assert ("edvr-stf", "device") not in widget.methods_panel.option_widgets
    assert ("edvr-stf", "weights") not in widget.methods_panel.option_widgets
    panel = widget.methods_panel
    panel.option_widget("bayesian", "prior").setCurrentText("static")
    panel.option_widget("edvr-stf", "batch_size").setValue(3)
    choose(widget, "bayesian", "edvr-stf")
    chosen = {c.name: c for c in panel.choices()}
    assert dict(chosen["bayesian"].options) == {"prior": "static"}  # only what differs
    assert dict(chosen["edvr-stf"].options) == {"batch_size": 3}
    assert chosen["edvr-stf"].weights is None  # empty field = the shipped weights


def test_an_entry_point_plugin_appears_with_its_options_and_runs(
    plugin, make_napari_viewer, tiny_sample, isolated_settings, qtbot
):
    from napari_xfusion._napari._widget import FusionWidget
    from napari_xfusion.methods.registry import available_methods

    with pytest.warns(RuntimeWarning, match="oops"):
        available_methods(refresh=True)
    viewer = make_napari_viewer()
    for data, kwargs, _ in tiny_sample:
        viewer.add_image(data.copy(), **kwargs)
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert "flat" in widget.method_boxes and "oops" not in widget.method_boxes
    assert "constant frame" in widget.method_boxes["flat"].toolTip()
    level = widget.methods_panel.option_widget("flat", "level")
    assert level.value() == 0.5  # the declared default
    level.setValue(0.25)
    choose(widget, "flat")
    widget.end.setValue(2)
    run_and_wait(widget, qtbot)
    assert widget.config().method("flat").options == {"level": 0.25}
    np.testing.assert_array_equal(viewer.layers["fused [flat]"].data[:3], 0.25)


# --- (2) a RunConfig per run: saved, loaded, the CLI's ----------------------------------


def test_settings_are_a_run_config_saved_and_loaded(fusion_viewer, tmp_path):
    from napari_xfusion._napari._widget import FusionWidget

    viewer, widget = fusion_viewer
    choose(widget, "bicubic", "bayesian")
    widget.methods_panel.option_widget("bayesian", "prior_weight").setValue(2.0)
    widget.separation.setValue(2)
    widget.start.setValue(1)
    widget.end.setValue(5)
    path = widget.save_settings(tmp_path / "run.json")
    config = RunConfig.load(path)
    assert config.method_names == ("bicubic", "bayesian")
    assert config.method("bayesian").options == {"prior_weight": 2.0}
    assert config.frames == (1, 6) and config.separation == 2  # half-open, as the CLI's
    assert config.keys == KeyRule()  # the HR layer's own key_indices
    # The remembered settings are that JSON (plus a small view dict).
    state = widget.state()
    assert RunConfig.from_dict(state["config"]) == widget.config()
    assert set(state) == {"config", "view"}
    other = FusionWidget(viewer)
    viewer.window.add_dock_widget(other, name="other")
    choose(other, "bicubic")
    other.load_settings(path)
    assert other.config() == widget.config()
    # A config that names a method not installed: the rest loads, the user is told.
    data = config.to_dict()
    data["methods"].append({"name": "bicubic", "options": {}})
    with pytest.raises(ValueError, match="twice"):
        RunConfig.from_dict(data)


def test_a_loaded_key_list_is_the_runs_keys_until_the_user_sets_a_rule(
    fusion_viewer, qtbot, tmp_path
):
    from napari_xfusion.app.config import MethodChoice

    viewer, widget = fusion_viewer
    # The full-rate truth as HR: the keys come from the configuration, not layer metadata.
    widget.hr_combo.setCurrentText("ground truth")
    loaded = RunConfig(
        keys=KeyRule(indices=(0, 3, 7)),
        separation=1,
        frames=(1, 7),
        methods=(MethodChoice("bicubic"), MethodChoice("bayesian", {"prior_weight": 3.0})),
    )
    widget.load_settings(loaded.save(tmp_path / "keys.json"))
    assert widget.config() == loaded
    assert "0, 3, 7" in widget.keys_note.text() and widget.keys_note.isVisibleTo(widget)
    run_and_wait(widget, qtbot)
    fused = viewer.layers["fused [bicubic]"]
    assert fused.metadata["xfusion"]["parameters"]["key_indices"] == [0, 3, 7]
    assert widget.config() == loaded  # a run keeps them, and so does the next one
    # Setting a rule in the dock replaces the list.
    widget.key_step.setValue(2)
    assert widget.hr_combo.currentText() == "ground truth"  # the user's pick stays
    assert widget.config().keys == KeyRule(step=2)
    assert "loaded settings" not in widget.keys_note.text()


def test_a_cli_config_loads_and_the_gui_run_equals_the_cli_run(
    make_napari_viewer, isolated_settings, qtbot, sample_files, tmp_path
):
    from napari_xfusion._napari._widget import FusionWidget
    from napari_xfusion.app.export import config_path

    out = tmp_path / "cli" / "fused.tif"
    out.parent.mkdir()
    argv = ["fuse", "--lr", str(sample_files["lr"]), "--hr", str(sample_files["hr"]),
            "--truth", str(sample_files["truth"]), "--method", "bicubic,bayesian",
            "--option", "bayesian.prior_weight=4", "--frames", "1:7", "--separation", "1",
            "--no-progress", "-o", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    saved = config_path(out.with_name("fused_bayesian.tif"))
    cli_config = RunConfig.load(saved)

    viewer = make_napari_viewer()
    _open_files(viewer, sample_files)
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert (widget.lr_combo.currentText(), widget.hr_combo.currentText()) == ("lr", "keys")
    widget.load_settings(saved)
    assert widget.selected_methods() == ["bicubic", "bayesian"]
    assert widget.config() == cli_config  # the same run description, paths included
    run_and_wait(widget, qtbot)
    for method in ("bicubic", "bayesian"):
        cli_stack = read_stack(out.with_name(f"fused_{method}.tif"))
        gui = viewer.layers[f"fused [{method}]"].data[1:7]
        assert cli_stack.tobytes() == gui.tobytes()  # bit for bit
        with open(out.with_name(f"fused_{method}.csv"), newline="") as f:
            # A blank cell: the frame equals the truth (bayesian's key frame), PSNR undefined.
            cli_psnr = [float(r["psnr"] or "nan") for r in csv.DictReader(f)]
        gui_psnr = [r.psnr for r in widget.session.table.rows(method)]
        np.testing.assert_array_equal(cli_psnr, gui_psnr)


# --- (3) one export, one result table: round trips --------------------------------------


def test_gui_export_evaluates_to_the_numbers_of_the_metrics_dock(
    fusion_viewer, qtbot, tmp_path, capsys
):
    from napari_xfusion._napari._metrics import MetricsWidget

    viewer, widget = fusion_viewer
    choose(widget, "bicubic", "bayesian")
    widget.start.setValue(1)
    widget.end.setValue(6)  # a partial window: only these frames are exported
    run_and_wait(widget, qtbot)
    metrics = MetricsWidget(viewer)
    viewer.window.add_dock_widget(metrics, name="metrics", area="bottom")
    out = tmp_path / "export"
    out.mkdir()
    files = widget.export(out)
    assert sorted(p.name for p in files) == sorted(
        f"fused_{m}{suffix}"
        for m in ("bicubic", "bayesian")
        for suffix in (".tif", ".csv", ".config.json")
    )
    meta = read_metadata(out / "fused_bayesian.tif")
    assert meta["frame_indices"] == [1, 2, 3, 4, 5, 6]
    assert read_stack(out / "fused_bayesian.tif").shape == (6, 64, 128)
    truth = tmp_path / "truth.tif"
    write_stack(truth, viewer.layers["ground truth"].data)
    shown = {row["method"]: row for row in metrics.summary_rows()}
    for method in ("bicubic", "bayesian"):
        csv_out = tmp_path / f"{method}.csv"
        argv = ["evaluate", str(out / f"fused_{method}.tif"), "--truth", str(truth)]
        assert cli.main([*argv, "--csv", str(csv_out)]) == 0
        with open(csv_out, newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["frame"]) for r in rows] == [1, 2, 3, 4, 5, 6]
        dock = {int(r.index): r for r in metrics.measured_rows() if r.method == method}
        for r in rows:
            for name in ("psnr", "aad", "ssim"):
                value = float(r[name] or "nan")  # blank: identical to the truth (a key)
                assert value == pytest.approx(getattr(dock[int(r["frame"])], name), nan_ok=True)
        # The dock's summary: mean and median between the keys (0, 4): frames 1-3, 5, 6.
        between = [float(r["psnr"]) for r in rows if int(r["frame"]) != 4]
        assert shown[method]["frames_between_keys"] == 5
        assert shown[method]["psnr_mean"] == pytest.approx(np.mean(between))
        assert shown[method]["psnr_median"] == pytest.approx(np.median(between))
        summary_cell = metrics.summary.item(list(shown).index(method), 2).text()
        assert summary_cell == f"{np.mean(between):.2f}"
    capsys.readouterr()


def test_gui_export_never_overwrites_a_file_a_layer_came_from(
    make_napari_viewer, isolated_settings, qtbot, sample_files
):
    from napari_xfusion._napari._widget import FusionWidget
    from napari_xfusion.app.export import OutputError

    viewer = make_napari_viewer()
    _open_files(viewer, sample_files)
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    choose(widget, "bicubic")
    widget.end.setValue(1)
    run_and_wait(widget, qtbot)
    sample_files["lr"].rename(sample_files["lr"].with_name("fused.tif"))
    viewer.layers["lr"].name = "lr"  # the layer's source is now called fused.tif:
    viewer.layers["lr"]._source = type(viewer.layers["lr"].source)(
        path=str(sample_files["lr"].with_name("fused.tif"))
    )
    before = sample_files["lr"].with_name("fused.tif").read_bytes()
    with pytest.raises(OutputError, match="destroy that input"):
        widget.export(sample_files["lr"].parent)
    assert sample_files["lr"].with_name("fused.tif").read_bytes() == before


def test_cli_export_reopens_as_fused_results_the_widget_lists(
    make_napari_viewer, isolated_settings, sample_files, tmp_path
):
    from napari_xfusion._napari._widget import FusionWidget

    out = tmp_path / "cli.tif"
    argv = ["fuse", "--lr", str(sample_files["lr"]), "--hr", str(sample_files["hr"]),
            "--truth", str(sample_files["truth"]), "--method", "bayesian", "--frames", "2:6",
            "--no-progress", "-o", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    viewer = make_napari_viewer()
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    (layer,) = viewer.open(str(out), plugin="napari-xfusion")
    assert layer.name == "fused [bayesian]"
    entry = layer.metadata["xfusion"]
    assert entry["role"] == "fused" and entry["method"] == "bayesian"
    assert entry["frames_done"] == [2, 3, 4, 5]
    assert RunConfig.from_dict(entry["parameters"]["config"]).frames == (2, 6)
    np.testing.assert_array_equal(layer.data[2:6], read_stack(out))
    assert tuple(str(a) for a in layer.axis_labels) == ("frame", "y", "x")
    assert widget.export_methods() == ["bayesian"]  # listed as a result to export


def test_reader_restores_units_and_the_key_in_force(make_napari_viewer, sample_files, tmp_path):
    viewer = make_napari_viewer()
    (keys,) = viewer.open(str(sample_files["hr"]), plugin="napari-xfusion")
    assert keys.metadata["xfusion"]["role"] == "hr_keys"
    # Keys 0 and 4: between them the key in force (the earlier one) shows, not the next.
    assert tuple(keys.scale)[0] == 4.0 and tuple(keys.translate)[0] == pytest.approx(1.5)
    for t, shown in ((0, 0), (3, 0), (4, 1)):
        assert round((t - keys.translate[0]) / keys.scale[0]) == shown
    # A GUI layer export with units and axis labels reopens with them.
    from napari_xfusion._napari._export import write_layer

    layer = viewer.add_image(
        np.zeros((3, 8, 8), np.float32), name="x", scale=(0.5, 2.0, 2.0), units=("ms", "um", "um")
    )
    layer.axis_labels = ("time", "y", "x")
    path = write_layer(tmp_path / "x.tif", layer)
    (again,) = viewer.open(str(path), plugin="napari-xfusion")
    assert tuple(str(u) for u in again.units) == ("millisecond", "micrometer", "micrometer")
    assert tuple(again.axis_labels) == ("time", "y", "x")
    assert json.loads(json.dumps(read_metadata(path)["layer"]))["scale"] == [0.5, 2.0, 2.0]


# --- (4) extra outputs, generic ----------------------------------------------------------


def test_flow_confidence_shows_next_to_its_fused_layer(fusion_viewer, qtbot):
    pytest.importorskip("cv2")
    viewer, widget = fusion_viewer
    choose(widget, "flow")
    widget.show_extras.setChecked(True)
    widget.end.setValue(3)
    run_and_wait(widget, qtbot)
    extra = viewer.layers["confidence [flow]"]
    assert extra.metadata["xfusion"]["role"] == "extra"
    assert extra.metadata["xfusion"]["frames_done"] == [0, 1, 2, 3]
    assert np.isfinite(extra.data[:4]).all() and extra.data[1:4].any()
    names = [layer.name for layer in viewer.layers]
    assert names.index("confidence [flow]") == names.index("fused [flow]") - 1  # just under it


# --- resume: each method its own missing frames ------------------------------------------


def test_resume_runs_each_method_on_its_own_missing_frames(fusion_viewer, qtbot, monkeypatch):
    from napari_xfusion._napari import _job

    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    widget.end.setValue(3)
    run_and_wait(widget, qtbot)  # bicubic has 0-3
    choose(widget, "bicubic", "bayesian")
    widget.end.setValue(7)
    seen = []
    real = _job.fusion_job

    def spy(request, cancel):
        seen.append(request.groups())
        return (yield from real(request, cancel))

    monkeypatch.setattr("napari_xfusion._napari._widget.fusion_job", spy)
    assert widget.missing_frames() == {"bicubic": [4, 5, 6, 7], "bayesian": list(range(8))}
    assert widget.run(resume=True)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert sorted(seen[0]) == [(("bayesian",), list(range(8))), (("bicubic",), [4, 5, 6, 7])]
    assert widget.last_summary.frames_done == 12  # not 16: bicubic's 0-3 are not redone
    for method in ("bicubic", "bayesian"):
        done = viewer.layers[f"fused [{method}]"].metadata["xfusion"]["frames_done"]
        assert sorted(done) == list(range(8))
    assert widget.progress.value() == widget.progress.maximum() == 8


# --- the demo with a display: the headless demo's methods, sample size and -o ------------


def test_demo_gui_path_runs_the_headless_methods_and_size_and_exports_to_out(
    monkeypatch, tmp_path, make_napari_viewer, isolated_settings, qtbot
):
    from napari_xfusion._napari import demo
    from napari_xfusion.cli import demo as cli_demo

    seen = {}
    monkeypatch.setattr(demo, "open_demo", lambda size, methods, out_dir: seen.update(
        size=size, methods=methods, out_dir=out_dir) or True)  # fmt: skip
    assert cli_demo._open_gui(tmp_path / "out")
    assert seen == {
        "size": cli_demo.DEMO_SIZE,
        "methods": cli_demo.demo_methods()[0],
        "out_dir": tmp_path / "out",
    }
    # launch() takes that sample description (here smaller, for the test).
    small = {**cli_demo.DEMO_SIZE, "n_frames": 6, "shape": (32, 64), "key_step": 5}
    viewer = make_napari_viewer()
    demo.launch(small, ["bicubic"], run=True, block=False, viewer=viewer, export_to=tmp_path / "o")
    widget = viewer.window.dock_widgets["Fusion (napari-xfusion)"]
    assert viewer.layers["ground truth"].data.shape == (6, 32, 64)
    assert widget.separation.value() == small["separation"]
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: (tmp_path / "o" / "fused.tif").is_file(), timeout=10000)


def test_attention_curves_grow_without_a_full_redraw(fusion_viewer, monkeypatch):
    from napari_xfusion._napari._attention import AttentionWidget
    from napari_xfusion.app.results import FrameRow

    viewer, widget = fusion_viewer
    plot = AttentionWidget(viewer)
    viewer.window.add_dock_widget(plot, area="bottom")
    session = widget.session
    session.begin(8, [0, 4], ["edvr-stf"], has_truth=False, fresh=["edvr-stf"])

    def rows(frames):
        return [FrameRow("edvr-stf", t, backward=2.0 - 0.2 * (t % 4), forward=1.0) for t in frames]

    session.add_many(rows(range(4)))
    redraws = []
    monkeypatch.setattr(plot, "redraw", lambda: redraws.append(1))
    session.add_many(rows(range(4, 8)))
    assert not redraws  # the same curves: only their data moved
    line = plot._lines[("edvr-stf", "backward")]
    np.testing.assert_array_equal(line.get_xdata(), np.arange(8))
    np.testing.assert_allclose(line.get_ydata()[[0, 3, 4]], [1.0, 0.7, 1.0])


def test_separation_auto_reads_the_lr_files_metadata_as_the_cli_does(
    make_napari_viewer, sample_files, tmp_path, isolated_settings
):
    """Default separation: the LR file's metadata, else 1 (RunConfig None) in both faces."""
    from napari_xfusion._napari._job import prepare
    from napari_xfusion._napari._widget import FusionWidget
    from napari_xfusion.app.inputs import prepare_inputs

    write_stack(sample_files["lr"], read_stack(sample_files["lr"]), {"separation": 2})
    viewer = make_napari_viewer()
    _open_files(viewer, sample_files)
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    choose(widget, "bicubic")
    assert widget.separation.value() == 0 and widget.separation.text() == "auto"
    assert widget.config().separation is None
    _, gui_inputs = prepare(widget.build_request().request)
    cli_inputs = prepare_inputs(RunConfig(lr=sample_files["lr"], hr=sample_files["hr"]))
    assert gui_inputs.prepared.separation == cli_inputs.separation == 2
    # An explicit value wins, and a saved config keeps "auto" as auto.
    widget.separation.setValue(1)
    assert prepare(widget.build_request().request)[1].prepared.separation == 1
    widget.separation.setValue(0)
    path = widget.save_settings(tmp_path / "run.json")
    assert RunConfig.load(path).separation is None
    widget.load_settings(path)
    assert widget.separation.value() == 0
