from pathlib import Path

import pytest
from omegaconf import OmegaConf

from trpo.config import AlgoConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("key, value, allowed", [
    ("max_kl", 0.0, "must be > 0"),
    ("max_kl", -0.01, "must be > 0"),
    ("damping", -1e-3, "must be >= 0"),
    ("cg_iters", 0, "must be an integer >= 1"),
    ("gamma", 1.5, r"must be in \[0, 1\]"),
    ("gae_lambda", -0.1, r"must be in \[0, 1\]"),
    ("backtrack_ratio", 1.0, r"must be in \(0, 1\)"),
    ("max_backtracks", 0, "must be an integer >= 1"),
    ("fisher_method", "exact", "choose one of"),
    ("fisher_subsample", 0.0, r"must be in \(0, 1\]"),
    ("name", "ppo", "choose one of"),
    ("value_epochs", 0, "must be an integer >= 1"),
])
def test_bad_values_fail_naming_key_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ValueError, match=rf"^algo\.{key}={value!r} is invalid: {allowed}"):
        AlgoConfig(**{key: value})


@pytest.mark.parametrize("name", ["trpo", "npg"])
def test_algo_presets_match_the_schema(name):
    preset = OmegaConf.load(CONF / "algo" / f"{name}.yaml")
    defaults = preset.pop("defaults", [])
    merged = OmegaConf.merge(OmegaConf.structured(AlgoConfig),
                             *(OmegaConf.load(CONF / "algo" / f"{base}.yaml") for base in defaults if base != "_self_"),
                             preset)
    config = OmegaConf.to_object(merged)
    assert isinstance(config, AlgoConfig) and config.name == name
    assert config == AlgoConfig(name=name)  # the presets restate the schema's defaults
