"""Atomic checkpoints that load with weights_only=True."""

import os
import random
import signal
import warnings
from pathlib import Path

import torch

LATEST = "latest.pt"


def save(directory: Path, state: dict) -> Path:
    """Write state to directory/latest.pt through a temporary file and an atomic rename."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LATEST
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)
    return path


def load(directory: Path) -> dict:
    """The latest checkpoint in directory, as tensors and plain Python values (no code runs).

    Raises ValueError naming the file when it is missing, truncated, corrupted or carries objects
    other than tensors and plain values (a pickle that would run code is refused without running it).
    """
    path = directory / LATEST
    try:
        with warnings.catch_warnings():  # torch warns about some bad files before refusing them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for bad files; all mean the same here
        reason = str(error).strip().splitlines()[0]
        raise ValueError(f"checkpoint {path} cannot be loaded: {reason}") from None


def rng_state(generator: torch.Generator) -> dict:
    """Torch's global state, the update's generator and Python's, in forms weights_only loading accepts.

    NumPy's global state is left out: nothing here draws from it (the envs have their own seeded RNGs).
    """
    return {"torch": torch.get_rng_state(), "generator": generator.get_state(), "python": random.getstate()}


def restore_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    random.setstate(state["python"])


class Stopped(Exception):
    """The run stopped on SIGINT or SIGTERM after writing its checkpoint."""

    def __init__(self, number: int, global_step: int, run_dir: Path):
        self.signal = number
        super().__init__(f"stopped by {signal.Signals(number).name} at step {global_step}; checkpoint in "
                         f"{run_dir / 'checkpoints'}")


class GracefulStop:
    """SIGINT/SIGTERM ask the loop to stop after the current iteration; a second SIGINT stops at once.

    Under the submitit launcher no handler is installed: submitit requeues through its own signals.
    """

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "GracefulStop":
        if "SUBMITIT_EXECUTOR" not in os.environ:
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame) -> None:
        if self.signal is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = number

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
