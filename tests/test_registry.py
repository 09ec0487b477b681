"""The method registry: builtin declarations, option parsing, entry-point plugins."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_xfusion import engine, methods
from napari_xfusion.methods import registry
from napari_xfusion.methods.registry import (
    MethodSpec,
    OptionSpec,
    available_methods,
    coerce_options,
    get_reconstructor,
    get_spec,
    parse_option,
)


def test_builtins_first_with_their_declarations():
    specs = available_methods()
    assert list(specs)[:4] == ["bicubic", "bayesian", "edvr", "edvr-stf"]
    assert (
        specs["bayesian"].outputs == ("variance", "confidence") and specs["bayesian"].uses_hr_keys
    )
    assert specs["edvr-stf"].needs_torch and specs["edvr-stf"].needs_weights
    assert specs["edvr-stf"].attention and specs["edvr-stf"].uses_hr_keys
    assert not specs["edvr"].uses_hr_keys
    assert specs["edvr-stf"].default_weights.endswith("edvr-stf-small.pt")
    assert {o.name for o in specs["edvr"].options} >= {"weights", "device", "batch_size", "tile"}
    assert methods.METHODS["edvr"] == specs["edvr"].target  # the older dict stays in step


def test_declared_options_match_the_constructors():
    import inspect

    for spec in available_methods().values():
        params = inspect.signature(spec.load_class()).parameters
        for opt in spec.options:
            assert opt.name in params, (spec.name, opt.name)
            assert params[opt.name].default == opt.default, (spec.name, opt.name)


def test_bicubic_never_imports_torch():
    code = (
        "import sys, numpy as np\n"
        "from napari_xfusion.methods import available_methods, get_reconstructor\n"
        "available_methods(); get_reconstructor('bicubic')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_parse_and_coerce_options():
    spec = get_spec("edvr-stf")
    assert parse_option(spec, "batch_size=8") == ("batch_size", 8)
    assert parse_option(spec, "edvr-stf.tile=none") == ("tile", None)
    assert parse_option(spec, "channels_last=yes") == ("channels_last", True)
    with pytest.raises(ValueError, match=r"--option edvr-stf.batch_size=abc: expected an integer"):
        parse_option(spec, "batch_size=abc")
    with pytest.raises(ValueError, match="expected key=value"):
        parse_option(spec, "batch_size")
    with pytest.raises(ValueError, match="expected one of float32, bfloat16, float16"):
        coerce_options(spec, {"precision": "int8"})
    with pytest.raises(ValueError, match="expected a number"):
        coerce_options(get_spec("bayesian"), {"prior_weight": True})
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_spec("nope")
    with pytest.raises(ValueError, match="type must be one of"):
        OptionSpec("x", "list")


def test_register_is_one_declaration(monkeypatch):
    spec = MethodSpec("bicubic-copy", "napari_xfusion.methods.bicubic:Bicubic", "a copy")
    monkeypatch.setattr(registry, "_extra", {})
    registry.register(spec)
    try:
        assert available_methods()["bicubic-copy"] is spec
        assert type(get_reconstructor("bicubic-copy")).__name__ == "Bicubic"
    finally:
        registry._extra.clear()
        methods.METHODS.pop("bicubic-copy", None)
        available_methods(refresh=True)


def test_entry_point_plugin_appears_and_runs_through_the_engine(plugin):
    with pytest.warns(RuntimeWarning, match="entry point 'oops'.*plugin bug"):
        specs = available_methods(refresh=True)
    assert list(specs)[:4] == ["bicubic", "bayesian", "edvr", "edvr-stf"]  # builtins intact
    assert "flat" in specs and "oops" not in specs
    assert specs["flat"].options[0].name == "level"
    lr = np.random.default_rng(0).random((6, 4, 8), dtype=np.float32)
    keys = engine.KeyFrames(np.zeros((2, 16, 32), np.float32), [0, 5])
    results = list(
        engine.run(["flat", "bicubic"], lr, keys, method_options={"flat": {"level": 0.25}})
    )
    flat = [r for r in results if r.method == "flat"]
    assert len(flat) == 6 and all(np.all(r.frame == 0.25) for r in flat)


def test_entry_point_plugin_through_the_run_configuration(plugin):
    from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig
    from napari_xfusion.app.inputs import prepare_inputs
    from napari_xfusion.app.job import FrameEvent, run_job

    with pytest.warns(RuntimeWarning):
        available_methods(refresh=True)
    config = RunConfig(
        keys=KeyRule(indices=(0, 5)), methods=(MethodChoice("flat", {"level": "0.75"}),)
    )
    assert config.methods[0].options == {"level": 0.75}
    lr = np.random.default_rng(0).random((6, 4, 8), dtype=np.float32)
    prepared = prepare_inputs(config, lr=lr, hr=np.zeros((2, 16, 32), np.float32))
    frames = [e.result.frame for e in run_job(config, prepared) if isinstance(e, FrameEvent)]
    assert len(frames) == 6 and all(np.all(f == 0.75) for f in frames)


def test_older_methods_dict_still_registers(monkeypatch):
    monkeypatch.setitem(methods.METHODS, "blend", "test_engine:KeyBlend")
    spec = get_spec("blend")
    assert spec.target == "test_engine:KeyBlend" and spec.options == ()
    assert type(get_reconstructor("blend", attention=False)).__name__ == "KeyBlend"
