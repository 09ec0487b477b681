"""RunConfig: validation, JSON round trips, clear errors."""

from __future__ import annotations

import json

import pytest

from napari_xfusion.app.config import (
    CONFIG_VERSION,
    ConfigError,
    FrozenOptions,
    KeyRule,
    MethodChoice,
    RunConfig,
)


def _full() -> RunConfig:
    return RunConfig(
        lr="/data/lr.tif",
        hr="/data/hr.tif",
        truth="/data/truth.tif",
        keys=KeyRule(indices=(0, 40, 80)),
        separation=2,
        frames=(10, 50),
        normalise="percentile",
        units="detector",
        device="cuda:1",
        methods=(
            MethodChoice("bayesian", {"n_classes": 4, "block_prior": "independent"}),
            MethodChoice("edvr-stf", {"batch_size": "4"}, weights="w.pt", weights_sha256="ab"),
        ),
    )


def test_round_trip_dict_json_and_file(tmp_path):
    config = _full()
    data = config.to_dict()
    assert data["version"] == CONFIG_VERSION and data["frames"] == [10, 50]
    assert data["methods"][1]["options"] == {"batch_size": 4}  # coerced to the declared type
    assert RunConfig.from_dict(json.loads(json.dumps(data))) == config
    path = config.save(tmp_path / "run.config.json")
    assert RunConfig.load(path) == config
    assert hash(RunConfig.load(path)) == hash(config)  # frozen all the way down
    assert not list(tmp_path.glob(".*part"))  # atomic write leaves no temp file
    simulated = RunConfig(hr="hr.tif", simulate=True, keys=KeyRule(step=20), lr_psnr=35, seed=3)
    assert RunConfig.from_dict(simulated.to_dict()) == simulated


def test_defaults_and_replace():
    config = RunConfig()
    assert config.method_names == ("bicubic",) and config.keys.from_metadata
    other = config.replace(frames=(0, 5))
    assert other.frames == (0, 5) and config.frames is None
    with pytest.raises(ConfigError, match="0 <= start < stop"):
        config.replace(frames=(5, 5))


def test_unknown_version_and_keys_are_refused(tmp_path):
    data = _full().to_dict()
    with pytest.raises(ConfigError, match="version 2"):
        RunConfig.from_dict({**data, "version": 2})
    with pytest.raises(ConfigError, match="unknown key 'key_step'"):
        RunConfig.from_dict({**data, "key_step": 4})
    with pytest.raises(ConfigError, match="keys: unknown key 'every'"):
        RunConfig.from_dict({**data, "keys": {"every": 3}})
    with pytest.raises(ConfigError, match=r"methods\[\]: unknown key 'weight'"):
        RunConfig.from_dict({**data, "methods": [{"name": "edvr", "weight": "x"}]})
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not a JSON run configuration"):
        RunConfig.load(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"keys": {"step": 1}}, "keys.step must be an integer >= 2"),
        ({"separation": 0}, "separation must be an integer >= 1"),
        ({"normalise": "minmax"}, "normalise must be one of auto, percentile, none"),
        ({"units": "counts"}, "units must be float or detector"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"lr_psnr": 80}, "lr_psnr must be between 20 and 60 dB"),
        ({"methods": (MethodChoice("bicubic"), MethodChoice("bicubic"))}, "given twice"),
    ],
)
def test_invalid_fields_name_themselves(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes)


def test_key_rule_is_one_of_three():
    with pytest.raises(ConfigError, match="only one of step, first_last and indices"):
        KeyRule(step=4, first_last=True)
    with pytest.raises(ConfigError, match="strictly increasing"):
        KeyRule(indices=(0, 8, 4))
    assert KeyRule(first_last=True).to_dict() == {"step": None, "first_last": True, "indices": None}


def test_method_choice_checks_options_against_the_registry():
    with pytest.raises(ConfigError, match=r"--option edvr-stf.batch_size=abc: expected an integer"):
        MethodChoice("edvr-stf", {"batch_size": "abc"})
    with pytest.raises(ConfigError, match="bayesian has no option 'layers'"):
        MethodChoice("bayesian", {"layers": 3})
    with pytest.raises(ConfigError, match="one of correlated, independent"):
        MethodChoice("bayesian", {"block_prior": "diagonal"})
    with pytest.raises(ConfigError, match="unknown method 'bogus'"):
        MethodChoice("bogus")
    with pytest.raises(ConfigError, match="bicubic uses no network weights"):
        MethodChoice("bicubic", weights="w.pt")
    with pytest.raises(ConfigError, match="give weights as MethodChoice.weights"):
        MethodChoice("edvr", {"weights": "w.pt"})
    choice = MethodChoice("edvr", {"tile": "none", "channels_last": "false"}, weights="w.pt")
    assert choice.constructor_options() == {"tile": None, "channels_last": False, "weights": "w.pt"}


def test_frozen_options_are_sorted_hashable_and_equal_to_dicts():
    a = FrozenOptions({"b": 1, "a": 2})
    assert list(a) == ["a", "b"] and a == {"a": 2, "b": 1} and hash(a) == hash(FrozenOptions(a))
    with pytest.raises(TypeError):
        a["c"] = 3  # type: ignore[index]
