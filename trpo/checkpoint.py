"""Durable checkpoints that load with weights_only=True, and stopping on SIGINT/SIGTERM."""

import logging
import os
import random
import signal
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

LATEST, PREVIOUS = "latest.pt", "previous.pt"

log = logging.getLogger(__name__)


def save(directory: Path, state: dict) -> Path:
    """Write state to directory/latest.pt; the checkpoint it replaces becomes previous.pt.

    The data reaches the disk (fsync) before the renames, and the renames before save returns, so a
    crash or power loss at any moment leaves a whole latest.pt or, between the renames, previous.pt.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path, temporary = directory / LATEST, directory / f"{LATEST}.tmp"
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    if path.exists():
        os.replace(path, directory / PREVIOUS)
    os.replace(temporary, path)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # the renames themselves
    finally:
        os.close(descriptor)
    return path


def exists(directory: Path) -> bool:
    """Whether directory holds a checkpoint to resume from (the latest or the previous one)."""
    return any((directory / name).is_file() for name in (LATEST, PREVIOUS))


def load_file(path: Path) -> dict:
    """One checkpoint file as tensors and plain Python values (no code runs).

    Raises ValueError naming the file when it is missing, empty, truncated, corrupted or carries objects
    other than tensors and plain values (a pickle that would run code is refused without running it).
    """
    try:
        with warnings.catch_warnings():  # torch warns about some bad files before refusing them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for bad files; all mean the same here
        lines = str(error).strip().splitlines()
        raise ValueError(f"checkpoint {path} cannot be loaded: {lines[0] if lines else type(error).__name__}") from None


def load(directory: Path) -> dict:
    """The latest checkpoint in directory; the previous one when the latest is missing (a crash between save's
    renames) or cannot be loaded: then with a warning, and the damaged file set aside as latest.pt.damaged,
    so that the next save does not rotate it over the previous one.

    Raises the latest's ValueError (see load_file) when neither loads.
    """
    latest, previous = directory / LATEST, directory / PREVIOUS
    if not latest.exists() and previous.is_file():
        return load_file(previous)
    try:
        return load_file(latest)
    except ValueError as error:
        if not previous.is_file():
            raise
        try:
            saved = load_file(previous)
        except ValueError:
            raise error from None
        os.replace(latest, directory / f"{LATEST}.damaged")
        log.warning("%s; using the previous checkpoint %s (step %d), the damaged one kept as %s.damaged", error,
                    previous, saved["global_step"], LATEST)
        return saved


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


class StoppedNow(BaseException):
    """SIGINT or SIGTERM outside the loop, or a second SIGINT: the run stops where it is, without a new
    checkpoint. A BaseException, as KeyboardInterrupt is: no `except Exception` may swallow it."""

    def __init__(self, number: int):
        self.signal = number
        super().__init__(f"stopped by {signal.Signals(number).name}")


class GracefulStop:
    """SIGINT/SIGTERM handling for a whole run.

    Inside `deferring()` (the training loop) a signal asks the loop to stop after the current iteration,
    and a second SIGINT stops at once; outside it (start-up, the final evaluation) a signal stops at
    once. Stopping at once raises StoppedNow where the trainer is, so its cleanup runs.
    Under the submitit launcher no handler is installed: submitit requeues through its own signals.
    """

    def __init__(self):
        self.signal: int | None = None
        self._deferring = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "GracefulStop":
        if "SUBMITIT_EXECUTOR" not in os.environ:
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame) -> None:
        if not self._deferring or (self.signal is not None and number == signal.SIGINT):
            raise StoppedNow(number)
        self.signal = number

    @contextmanager
    def deferring(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
