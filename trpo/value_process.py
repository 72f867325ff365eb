"""The value-function fit, in the trainer's process or in a child process that runs it meanwhile.

With `algo.value_process=true` the fit of one batch runs on another core while the trainer takes the
policy step and collects the next rollout (threads would fight over the GIL with the simulator's
Python code). Both ways run the same `_Fitter` methods; only the transport differs. Tensors cross
the pipe as NumPy arrays, whose pickles cost a twentieth of `torch.save`/`torch.load` for these
sizes (0.1 ms against 2.4 ms).
"""

import copy
import logging
import multiprocessing
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trpo.kfac import KFACCritic
from trpo.policy import ValueNetwork
from trpo.processes import Child
from trpo.update import fit_value

log = logging.getLogger(__name__)


def _to_numpy(tree: Any) -> Any:
    """Tensors (in dicts, lists and tuples) as NumPy arrays on the host, for the pipe."""
    if isinstance(tree, Tensor):
        return tree.detach().cpu().numpy()
    if isinstance(tree, dict):
        return {key: _to_numpy(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(value) for value in tree)
    return tree


def _to_torch(tree: Any) -> Any:
    """The inverse of _to_numpy (tensors on the CPU)."""
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(tree)
    if isinstance(tree, dict):
        return {key: _to_torch(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_torch(value) for value in tree)
    return tree


class _Fitter:
    """A value network's copy with its own optimizer and generator, where the fit runs."""

    def __init__(self, value: ValueNetwork, lr: float, epochs: int, minibatch_size: int, seed: int,
                 critic: KFACCritic | None, lr_decay_fits: int | None):
        self.value, self.epochs, self.minibatch_size = value, epochs, minibatch_size
        self.optimizer = torch.optim.Adam(value.parameters(), lr=lr) if critic is None else critic
        self.generator = torch.Generator().manual_seed(seed)
        # The lr in closed form of the fits done, so a run resumed with a larger total_steps decays over its new
        # length (a chained schedule would keep the saved one's).
        self.scheduler = None if lr_decay_fits is None else torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda fits: max(0.0, 1.0 - fits / lr_decay_fits))

    def fit(self, obs: Tensor, returns: Tensor, weights: dict, normalizer: dict) -> tuple[dict, dict]:
        """Fit from the trainer's value weights and normalizer; returns the new weights and the metrics."""
        self.value.body.load_state_dict(weights)
        self.value.normalizer.load_state_dict(normalizer)
        metrics = fit_value(self.value, self.optimizer, obs, returns, self.epochs, self.minibatch_size,
                            self.generator)
        if self.scheduler is not None:
            self.scheduler.step()
        return self.value.body.state_dict(), metrics

    def state(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}
        return state if self.scheduler is None else state | {"scheduler": self.scheduler.state_dict()}

    def load_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])  # it moves its state next to the parameters
        self.generator.set_state(state["generator"].cpu())
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
            self.scheduler.last_epoch -= 1
            self.scheduler.step()  # the lr of the fits done on this run's schedule, not the saved lr


class _NumpyFitter(_Fitter):
    """_Fitter in the child, on one core beside the trainer's: NumPy arrays in and out, the pipe's cheap form."""

    def __init__(self, *args):
        torch.set_num_threads(1)
        super().__init__(*args)

    def fit(self, *args) -> tuple[dict, dict]:
        return _to_numpy(super().fit(*_to_torch(args)))

    def state(self) -> dict:
        return _to_numpy(super().state())

    def load_state(self, state: dict) -> None:
        super().load_state(_to_torch(state))


class ValueFitter:
    """Fits `value` by minibatch regression (Adam, or K-FAC): `start(obs, returns)`, later `result()`.

    value: the trainer's value network; result() loads the fitted weights into it.
    lr, epochs, minibatch_size: Adam's learning rate, passes over the batch, samples per step.
    seed: seeds the generator of the shuffles.
    process: fit on the CPU in a child process, overlapping whatever the trainer does between start and
        result; otherwise start() fits on value's device before it returns.
    critic: a KFACCritic to fit with instead of Adam (lr then unused).
    lr_decay_fits: Adam's lr falls linearly from lr to 0 over this many fits (None: it stays at lr).
    """

    def __init__(self, value: ValueNetwork, lr: float, epochs: int, minibatch_size: int, seed: int,
                 process: bool = False, critic: KFACCritic | None = None, lr_decay_fits: int | None = None):
        self.value = value
        self._pending = False
        self._metrics: dict[str, Tensor] = {}
        start_method = multiprocessing.get_start_method(allow_none=True)
        if process and start_method not in (None, "fork", "spawn", "forkserver"):  # e.g. a joblib (loky) worker
            log.warning("algo.value_process: a child cannot be started from a %r worker; fitting here", start_method)
            process = False
        fitted = copy.deepcopy(value)  # start() sends it value's weights and normalizer each time
        if process:
            self._fitter, self.child = None, Child("the value-fit process", _NumpyFitter, fitted.cpu(), lr, epochs,
                                                    minibatch_size, seed, critic, lr_decay_fits)
        else:
            self._fitter, self.child = _Fitter(fitted, lr, epochs, minibatch_size, seed, critic, lr_decay_fits), None

    def _send(self, method: str, *args) -> None:
        if self.child is None:  # tensors stay where they are
            self._local_reply = getattr(self._fitter, method)(*args)
        else:
            self.child.send(method, *_to_numpy(args))

    def _receive(self) -> Any:
        return self._local_reply if self.child is None else _to_torch(self.child.receive())

    def start(self, obs: Tensor, returns: Tensor, normalizer: dict[str, Tensor] | None = None) -> None:
        """Begin fitting value's current weights on obs [B, obs_dim] and returns [B].

        normalizer: the observation statistics to fit with (by default value's as they are now).
        """
        self.result()  # one fit at a time
        normalizer = self.value.normalizer.state_dict() if normalizer is None else normalizer
        self._send("fit", obs, returns, self.value.body.state_dict(), normalizer)
        self._pending = True

    def result(self) -> dict[str, Tensor]:
        """Wait for the last fit, load its weights into `value`; its metrics ({} before the first fit)."""
        if self._pending:
            self._pending = False
            body, self._metrics = self._receive()
            self.value.body.load_state_dict(body)
        return self._metrics

    def state(self) -> dict:
        """The optimizer's and generator's state, for a checkpoint (after the last fit)."""
        self.result()
        self._send("state")
        return copy.deepcopy(self._receive())  # in-process, the live optimizer state: a checkpoint needs a copy

    def load_state(self, state: dict) -> None:
        self._send("load_state", state)
        self._receive()

    def close(self) -> None:
        if self.child is not None:
            self.child.close()
