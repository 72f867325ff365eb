"""The short learning runs behind the learning tests (tests/test_train.py), over several seeds.

    python benchmarks/learning_checks.py [--seeds 0 1 2]

Prints, per env and seed, the first iteration's training return and the final deterministic
evaluation return, so the tests' thresholds rest on recorded runs with a margin.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from trpo.train import train

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {"CartPole-v1": 30_000, "Pendulum-v1": 100_000}  # as in tests/test_train.py


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print("| env | steps | seed | first training return | final deterministic eval | wall (s) |")
    print("|---|---|---|---|---|---|")
    for env_id, steps in CHECKS.items():
        for seed in args.seeds:
            with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
                cfg = compose("config", [f"env={env_id}", f"seed={seed}", f"total_steps={steps}", "logger=none",
                                         "logger.progress_bar=false"])
            cfg.env_id = env_id
            with tempfile.TemporaryDirectory() as run_dir:
                started = time.perf_counter()
                final = train(OmegaConf.to_object(cfg), Path(run_dir))
                first = json.loads((Path(run_dir) / "metrics.jsonl").read_text().splitlines()[0])
            print(f"| {env_id} | {steps} | {seed} | {first['rollout/episode_return']:.1f} | {final:.1f} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
