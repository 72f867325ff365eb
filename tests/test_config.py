import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import toy_envs  # noqa: F401  (registers the Toy* ids)
import trpo
from trpo import command_line
from trpo.config import AlgoConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("key, value, allowed", [
    ("max_kl", 0.0, "must be > 0"),
    ("max_kl", -0.01, "must be > 0"),
    ("damping", -1e-3, "must be >= 0"),
    ("cg_iters", 0, "must be an integer >= 1"),
    ("gamma", 1.5, r"must be in \[0, 1\]"),
    ("gae_lambda", -0.1, r"must be in \[0, 1\]"),
    ("gamma_final", 1.01, r"must be null or in \[0, 1\]"),
    ("backtrack_ratio", 1.0, r"must be in \(0, 1\)"),
    ("max_backtracks", 0, "must be an integer >= 1"),
    ("fisher_method", "exact", "choose one of"),
    ("fisher_subsample", 0.0, r"must be in \(0, 1\]"),
    ("name", "ppo", "choose one of"),
    ("value_epochs", 0, "must be an integer >= 1"),
    ("entropy_coef", -0.01, "must be >= 0"),
])
def test_bad_values_fail_naming_key_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ValueError, match=rf"^algo\.{key}={value!r} is invalid: {allowed}"):
        AlgoConfig(**{key: value})


def test_a_decaying_value_lr_needs_adam():
    with pytest.raises(ValueError, match=r"^algo\.value_lr_decay=True is invalid: needs value_optimizer=adam"):
        AlgoConfig(value_lr_decay=True, value_optimizer="kfac")


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


V5_PRESETS = ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Swimmer-v5", "Humanoid-v5",
              "InvertedPendulum-v5", "InvertedDoublePendulum-v5"]
# what v5 retuned on its seeds 0-4 (benchmarks/README.md), or kept where the v4 preset changed after v5's held-out round
V5_RETUNED = {"Hopper-v5": {"algo": {"gamma": 0.99}},
              "InvertedPendulum-v5": {"steps_per_env": 128, "algo": {"value_lr_decay": True}},
              "Ant-v5": {"env": {"kwargs": {"include_cfrc_ext_in_observation": False}}},
              "Walker2d-v5": {"algo": {"value_lr_decay": True}},
              "Humanoid-v5": {"algo": {"value_lr_decay": True}}}


@pytest.mark.parametrize("env_id", V5_PRESETS)
def test_each_v5_id_resolves_its_preset(env_id):
    v5, _ = command_line.composed([f"env={env_id}"])
    v4, _ = command_line.composed([f"env={env_id.replace('-v5', '-v4')}"])
    defaults, _ = command_line.composed(["env=Pusher-v5"])  # an id without a preset: the schema's values
    assert v5.env_id == env_id and command_line.preset_note(env_id) is None
    v5.env_id = v4.env_id
    assert v5 == OmegaConf.merge(v4, V5_RETUNED.get(env_id, {}))  # the v4 preset and only what v5 retuned
    assert v5 != OmegaConf.merge(defaults, {"env_id": v4.env_id})  # ... which differs from the defaults


def test_an_env_without_a_preset_says_so_once_in_the_log(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="trpo.train"):
        trpo.train("Pendulum-v1", ["debug=smoke"], run_dir=tmp_path / "preset")
        assert "no preset" not in caplog.text
        trpo.train("ToyMultiBinary-v0", ["debug=smoke"], run_dir=tmp_path / "none")
    notes = [record.message for record in caplog.records if "no preset" in record.message]
    assert len(notes) == 1 and notes[0].startswith("ToyMultiBinary-v0 has no preset in conf/env")
    assert "Hopper-v5" in notes[0]  # the presets are listed
    assert "(did you mean Hopper-v5?)" in command_line.preset_note("Hoper-v5")
