"""RunLogger: one flat record per iteration to metrics.jsonl, W&B and the progress bar."""

import json
import logging
from pathlib import Path

import numpy as np
import torch
import wandb
from tqdm import tqdm

from trpo.config import LoggerConfig

log = logging.getLogger(__name__)


def _iteration(line: str) -> int:
    """The iteration a metrics.jsonl line records; 0 for a line a crash cut short."""
    try:
        return json.loads(line)["iteration"]
    except (ValueError, KeyError, TypeError):
        return 0


def spectral_histogram(vectors: dict[str, list[float]]) -> dict[str, wandb.Histogram]:
    """The Fisher's spectral density (curvature/density_*) as a W&B histogram over log10 of the eigenvalue."""
    if "curvature/density_nodes" not in vectors:
        return {}
    nodes = np.log10(np.maximum(vectors["curvature/density_nodes"], 1e-12))
    counts, edges = np.histogram(nodes, bins=32, weights=vectors["curvature/density_weights"])
    return {"curvature/log10_spectral_density": wandb.Histogram(np_histogram=(counts, edges))}


class RunLogger:
    """Writes metrics.jsonl always; W&B in the configured mode; a tqdm bar with steps/s and return.

    run_dir: the run's output directory.
    config: logger settings.
    run_config: the whole run configuration, stored with the W&B run (its env_id and algo.name tag it).
    total_steps: the progress bar's length.
    resumed_iteration: the checkpoint's iteration when resuming (0 for a new run): metrics.jsonl keeps
        the lines up to it, so a resumed run has no duplicate or missing iterations.
    """

    def __init__(self, run_dir: Path, config: LoggerConfig, run_config: dict, total_steps: int,
                 resumed_iteration: int = 0):
        metrics_path = run_dir / "metrics.jsonl"
        if metrics_path.exists():  # keep what the checkpoint covers; later lines are logged again
            kept = [line for line in metrics_path.read_text().splitlines() if 0 < _iteration(line) <= resumed_iteration]
            metrics_path.write_text("".join(line + "\n" for line in kept))
        self.metrics_file = open(metrics_path, "a")
        env_id, algo = run_config["env_id"], run_config["algo"]["name"]
        # An explicit mode beats WANDB_MODE, so offline never prompts for a login. Runs of one sweep
        # share a group and runs of one env a job type, so W&B's grouped view shows mean and spread.
        # A resumed run continues the same W&B run: its id is kept in the run directory.
        id_path = run_dir / "wandb_run_id"
        run_id = id_path.read_text().strip() if resumed_iteration > 0 and id_path.exists() else None
        self.wandb = wandb.init(project=config.project, entity=config.entity, dir=str(run_dir),
                                mode=config.wandb_mode, config=run_config, name=run_dir.name,
                                group=config.group, job_type=env_id, tags=[algo, env_id], id=run_id,
                                resume="allow" if run_id else None)
        id_path.write_text(self.wandb.id)
        self.wandb.define_metric("global_step")
        self.wandb.define_metric("*", step_metric="global_step")
        self.progress = tqdm(total=total_steps, unit="step", unit_scale=True, disable=not config.progress_bar,
                             dynamic_ncols=True)

    def log(self, metrics: dict[str, torch.Tensor | float | int]) -> dict[str, float]:
        """Copy the metrics to the host once, then write them everywhere; returns the plain record."""
        names = [k for k, v in metrics.items() if isinstance(v, torch.Tensor) and v.dim() == 0]
        host = torch.stack([metrics[k].detach().to("cpu", torch.float64) for k in names]).tolist()
        vectors = {k: v.detach().cpu().tolist() for k, v in metrics.items() if isinstance(v, torch.Tensor) and v.dim()}
        record = {k: v for k, v in metrics.items() if not isinstance(v, torch.Tensor)} | dict(zip(names, host))
        self.metrics_file.write(json.dumps(record | vectors) + "\n")
        self.metrics_file.flush()
        self.wandb.log(record | spectral_histogram(vectors))
        self.progress.update(record["global_step"] - self.progress.n)
        self.progress.set_postfix(sps=f"{record['time/sps']:.0f}", ret=f"{record['rollout/episode_return']:.1f}",
                                  refresh=False)
        log.info("step %d iteration %d return %.2f kl %.4f sps %.0f", record["global_step"], record["iteration"],
                 record["rollout/episode_return"], record["policy/kl"], record["time/sps"])
        return record

    def video(self, path: Path, global_step: int) -> None:
        """An evaluation video (MP4) into W&B at global_step; an offline run keeps it for `wandb sync`."""
        self.wandb.log({"eval/video": wandb.Video(str(path), format="mp4"), "global_step": global_step})

    def summary(self, values: dict[str, float]) -> None:
        """Final figures (e.g. the deterministic evaluation) into the W&B summary."""
        self.wandb.summary.update(values)

    def close(self) -> None:
        self.progress.close()
        self.metrics_file.close()
        self.wandb.finish()  # in-process multirun would otherwise reuse this run
