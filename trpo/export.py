"""Export a trained policy's deterministic actor as one file:
`python -m trpo.export <run dir or compressed dir> --format onnx|torchscript [--out <file>]`.

The actor maps raw observations [B, obs_dim] (float32, any batch size) to the env's actions: the
frozen observation normalizer, the network, the distribution's mode (the Gaussian's mean, the most
likely discrete action), clipped to a Box's bounds or offset by a discrete space's start, as
`trpo.load(...).predict(obs)` does. The written file is loaded back and checked against the PyTorch
policy on a batch of states before the command returns.
"""

import argparse
import logging
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from trpo.evaluate import load_run
from trpo.policy import Policy

FORMATS = {"onnx": "actor.onnx", "torchscript": "actor.torchscript.pt"}
CHECK_STATES = 256


class DeterministicActor(nn.Module):
    """Observations [B, obs_dim] -> the env's actions [B, ...] of a policy's mode."""

    def __init__(self, policy: Policy, action_space: gym.Space):
        super().__init__()
        self.policy = policy
        self.box = isinstance(action_space, gym.spaces.Box)
        if self.box:
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))
        else:
            self.register_buffer("start", torch.as_tensor(getattr(action_space, "start", 0), dtype=torch.int64))

    def forward(self, obs: Tensor) -> Tensor:
        mode = self.policy.distribution(self.policy(obs)).mode
        if self.box:
            return torch.clamp(mode, self.low, self.high)
        return mode.to(torch.int64) + self.start


def check_states(policy: Policy, count: int = CHECK_STATES, seed: int = 0) -> Tensor:
    """States spread like the training data: the normalizer's mean and std (standard normal without one)."""
    first = next(m for m in policy.modules() if isinstance(m, nn.Linear))
    noise = torch.randn(count, first.in_features, generator=torch.Generator().manual_seed(seed))
    normalizer = policy.normalizer
    if isinstance(normalizer, nn.Identity):
        return noise
    return (normalizer.mean + noise * normalizer.var.sqrt()).float()


def export_actor(policy: Policy, action_space: gym.Space, path: str | Path, format: str) -> Path:
    """Write the deterministic actor of a float32 CPU policy to path as ONNX or TorchScript."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is invalid: choose one of {', '.join(FORMATS)}")
    actor = DeterministicActor(policy, action_space).eval()
    example = check_states(policy, count=2)
    path = Path(path)
    if format == "onnx":
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # silences notes on torchvision ops we never use
        torch.onnx.export(actor, (example,), path, dynamo=True, verbose=False, input_names=["obs"],
                          output_names=["action"], dynamic_shapes={"obs": {0: torch.export.Dim("batch")}})
    else:
        with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export, but still loads
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.trace(actor, example).save(str(path))
    return path


def run_exported(path: str | Path, obs: np.ndarray) -> np.ndarray:
    """The actions [B, ...] an exported actor file gives for observations [B, obs_dim]."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"obs": obs.astype(np.float32)})[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))(torch.as_tensor(obs, dtype=torch.float32)).numpy()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m trpo.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory or a compressed/<method>-<setting> directory")
    parser.add_argument("--format", choices=list(FORMATS), required=True)
    parser.add_argument("--out", type=Path, help="the file to write (default: <run dir>/actor.onnx or "
                                                 "<run dir>/actor.torchscript.pt)")
    args = parser.parse_args(argv)
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401  (torch.onnx needs it and onnxscript)
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as error:
            sys.exit(f"--format onnx needs onnx, onnxscript and onnxruntime ({error}): pip install 'trpo[export]'")
    try:
        config, policy, action_space = load_run(args.run_dir)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    policy = policy.float().cpu().eval()
    path = export_actor(policy, action_space, args.out or args.run_dir / FORMATS[args.format], args.format)
    obs = check_states(policy)
    with torch.no_grad():
        expected = DeterministicActor(policy, action_space)(obs).numpy()
    difference = float(np.abs(run_exported(path, obs.numpy()) - expected).max())
    if difference > 1e-4:
        sys.exit(f"error: {path} gives actions {difference:.3g} away from the PyTorch policy's")
    print(f"{config.env_id}: {args.format} actor written to {path} ({path.stat().st_size} bytes); "
          f"largest action difference from PyTorch on {CHECK_STATES} states: {difference:.2g}")


if __name__ == "__main__":
    main(sys.argv[1:])
