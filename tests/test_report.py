import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from trpo.config import AlgoConfig, Config
from trpo.report import write_report


def synthetic_run(directory: Path, env_id: str, seed: int, max_kl: float, final: float | None, slope: float,
                  kls: list[tuple[float, int]] | None = None):
    """A run directory as trpo.train writes it: config.yaml, metrics.jsonl and (optionally) eval.json.

    kls: (policy/kl, policy/accepted) of the first iterations; the others log none.
    """
    directory.mkdir(parents=True)
    config = Config(env_id=env_id, seed=seed, algo=AlgoConfig(max_kl=max_kl), total_steps=10_000)
    (directory / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    rows = [{"global_step": 1000 * i, "rollout/episode_return": slope * i, "time/collect_s": 1.0,
             "time/update_s": 0.5} for i in range(1, 11)]
    for row, (kl, accepted) in zip(rows, kls or []):
        row |= {"policy/kl": kl, "policy/accepted": accepted}
    (directory / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if final is not None:
        (directory / "eval.json").write_text(json.dumps({"eval/episode_return": final, "time/wall_s": 42.0}))


def table_row(table: str, env_id: str, setting: str) -> list[str]:
    (line,) = [line for line in table.splitlines() if line.startswith(f"| {env_id} | {setting} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_groups_by_env_and_differing_settings(tmp_path):
    finals = {0.01: [100.0, 200.0, 300.0], 0.02: [400.0, 500.0, 900.0]}
    for max_kl, values in finals.items():
        for seed, final in enumerate(values):
            # accepted updates over max_kl: one in each 0.01 run (0.015); a rejected one never counts
            kls = [(0.015, 1), (0.05, 0), (0.005, 1), (max_kl, 1)]
            synthetic_run(tmp_path / "sweep" / f"kl{max_kl}-s{seed}", "Hopper-v4", seed, max_kl, final, slope=seed + 1,
                          kls=kls)
    for seed in range(2):  # no eval.json: the final figure is the last training return
        synthetic_run(tmp_path / "other" / f"s{seed}", "Swimmer-v4", seed, 0.01, None, slope=10.0 * (seed + 1))

    table = write_report([tmp_path / "sweep", tmp_path / "other"], tmp_path / "out")

    for max_kl, values in finals.items():
        _, setting, seeds, steps, mean, ci, wall, violations = table_row(table, "Hopper-v4", f"trpo algo.max_kl={max_kl}")
        assert (int(seeds), int(steps), float(wall)) == (3, 10_000, 42.0)
        assert int(violations) == (3 if max_kl == 0.01 else 0)
        assert float(mean) == pytest.approx(np.mean(values), abs=0.05)
        low, high = (float(x) for x in ci.strip("[]").split(","))
        assert min(values) <= low <= np.mean(values) <= high <= max(values)
    _, setting, seeds, steps, mean, ci, wall, violations = table_row(table, "Swimmer-v4", "trpo")
    assert violations == "n/a"  # no KL logged
    assert int(seeds) == 2 and float(mean) == pytest.approx(np.mean([100.0, 200.0]), abs=0.05)
    assert float(wall) == pytest.approx(15.0)  # 10 iterations of 1.5 s
    assert (tmp_path / "out" / "results.md").read_text() == table
    for env_id in ("Hopper-v4", "Swimmer-v4"):
        png = tmp_path / "out" / f"{env_id}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_report_without_runs_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="no metrics.jsonl found"):
        write_report([tmp_path], tmp_path / "out")


def test_report_keeps_a_peer_implementation_apart_from_ours(tmp_path):
    for seed, final in enumerate([100.0, 300.0]):
        synthetic_run(tmp_path / "ours" / f"s{seed}", "Hopper-v4", seed, 0.01, final, slope=1.0)
    for seed, final in enumerate([50.0, 70.0]):  # what benchmarks/peers.py writes
        directory = tmp_path / "peers" / f"s{seed}"
        synthetic_run(directory, "Hopper-v4", seed, 0.01, final, slope=0.5)
        (directory / "config.yaml").write_text(OmegaConf.to_yaml(
            {"env_id": "Hopper-v4", "implementation": "PeerLib TRPO", "seed": seed, "total_steps": 10_000}))

    table = write_report([tmp_path / "ours", tmp_path / "peers"], tmp_path / "out")

    assert float(table_row(table, "Hopper-v4", "trpo")[4]) == pytest.approx(200.0)
    assert float(table_row(table, "Hopper-v4", "PeerLib TRPO")[4]) == pytest.approx(60.0)
