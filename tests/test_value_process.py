import os
import signal
import time

import pytest
import torch

from trpo.kfac import KFACCritic
from trpo.policy import ObservationNormalizer, ValueNetwork
from trpo.processes import ChildError
from trpo.value_process import ValueFitter


def batches(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        obs = torch.randn(256, 3, generator=generator) * 3 + 1
        yield obs, torch.sin(obs[:, 0]) + obs[:, 1] ** 2


def fitted(process: bool):
    """Three fits with the normalizer updated in between; the weights, metrics and fitter state after them."""
    torch.manual_seed(0)
    value = ValueNetwork(3, normalizer=ObservationNormalizer(3))
    fitter = ValueFitter(value, lr=1e-2, epochs=3, minibatch_size=64, seed=1, process=process)
    metrics = []
    for obs, returns in batches(3):
        metrics.append(fitter.result())
        value.normalizer.update(obs)
        fitter.start(obs, returns)
    metrics.append(fitter.result())
    state = fitter.state()
    fitter.close()
    return value.state_dict(), metrics, state


def test_child_process_fits_exactly_as_in_process():
    (local_weights, local_metrics, local_state), (remote_weights, remote_metrics, remote_state) = (
        fitted(False), fitted(True))
    assert local_metrics[0] == {} and len(local_metrics) == 4
    for name, tensor in local_weights.items():
        assert torch.equal(tensor, remote_weights[name]), name
    for local, remote in zip(local_metrics[1:], remote_metrics[1:]):
        assert local.keys() == remote.keys() and all(torch.equal(local[k], remote[k]) for k in local)
    assert local_metrics[3]["value/loss"] < local_metrics[1]["value/loss"]  # it learns
    assert torch.equal(local_state["generator"], remote_state["generator"])
    assert local_state["optimizer"]["state"][0]["step"] == remote_state["optimizer"]["state"][0]["step"] == 36  # 3 fits x 3 epochs x 4 minibatches


@pytest.mark.parametrize("process", [False, True])
def test_a_decaying_learning_rate_falls_linearly_to_zero_and_stays(process):
    torch.manual_seed(0)
    value = ValueNetwork(3)
    fitter = ValueFitter(value, lr=1e-2, epochs=1, minibatch_size=64, seed=1, process=process, lr_decay_fits=4)
    data = list(batches(6))
    for fits, (obs, returns) in enumerate(data[:5]):
        assert fitter.state()["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-2 * max(0, 1 - fits / 4),
                                                                                     abs=1e-12)
        fitter.start(obs, returns)
        fitter.result()
    frozen = {k: v.clone() for k, v in value.state_dict().items()}
    fitter.start(*data[5])  # at lr 0 a fit changes nothing
    fitter.result()
    fitter.close()
    assert all(torch.equal(tensor, frozen[name]) for name, tensor in value.state_dict().items())


@pytest.mark.parametrize("process", [False, True])
def test_a_decaying_learning_rate_continues_over_a_longer_schedule_after_a_load(process):
    torch.manual_seed(0)
    data = list(batches(3))
    first = ValueFitter(ValueNetwork(3), lr=1e-2, epochs=1, minibatch_size=64, seed=1, lr_decay_fits=2)
    for obs, returns in data[:2]:
        first.start(obs, returns)
    state = first.state()  # both fits of a 2-fit schedule done: lr 0
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0, abs=1e-12)
    longer = ValueFitter(ValueNetwork(3), lr=1e-2, epochs=1, minibatch_size=64, seed=1, process=process,
                         lr_decay_fits=4)
    longer.load_state(state)
    for fits in (2, 3, 4):
        assert longer.state()["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-2 * (1 - fits / 4), abs=1e-12)
        longer.start(*data[2])
    longer.close()


@pytest.mark.parametrize("optimizer", ["adam", "adam with lr decay", "kfac"])
def test_state_round_trip_continues_the_same_fit(optimizer):
    critic = (lambda: KFACCritic(0.01, 0.01)) if optimizer == "kfac" else (lambda: None)
    lr_decay_fits = 4 if optimizer == "adam with lr decay" else None  # lr x 1, 3/4, 1/2 over the three fits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the child: K-FAC's Cholesky on more threads differs in the last bits
    try:
        continued_in_a_child(critic, lr_decay_fits)
    finally:
        torch.set_num_threads(threads)


def continued_in_a_child(critic, lr_decay_fits):
    torch.manual_seed(0)
    value = ValueNetwork(3)
    first = ValueFitter(value, lr=1e-2, epochs=2, minibatch_size=64, seed=1, critic=critic(),
                        lr_decay_fits=lr_decay_fits)
    data = list(batches(3))
    first.start(*data[0])
    first.result()
    state, weights = first.state(), {k: v.clone() for k, v in value.state_dict().items()}
    for obs, returns in data[1:]:  # two fits after the checkpoint: the schedule's own state decides the second
        first.start(obs, returns)
        expected = first.result()

    restored_value = ValueNetwork(3)
    restored_value.load_state_dict(weights)
    second = ValueFitter(restored_value, lr=1e-2, epochs=2, minibatch_size=64, seed=99, process=True,
                         critic=critic(), lr_decay_fits=lr_decay_fits)
    second.load_state(state)
    for obs, returns in data[1:]:
        second.start(obs, returns)
        continued = second.result()
    assert torch.equal(continued["value/loss"], expected["value/loss"])
    second.close()
    assert all(torch.equal(tensor, value.state_dict()[name]) for name, tensor in restored_value.state_dict().items())


def test_errors_in_the_child_are_reported():
    fitter = ValueFitter(ValueNetwork(3), lr=1e-2, epochs=1, minibatch_size=8, seed=0, process=True)
    fitter.start(torch.randn(16, 5), torch.randn(16))  # the wrong observation width
    with pytest.raises(RuntimeError, match="in the value-fit process"):
        fitter.result()
    fitter.close()


def test_falls_back_to_fitting_in_process_inside_a_joblib_worker(monkeypatch):
    monkeypatch.setattr("multiprocessing.get_start_method", lambda allow_none=False: "loky")
    fitter = ValueFitter(ValueNetwork(3), lr=1e-2, epochs=1, minibatch_size=8, seed=0, process=True)
    assert fitter.child is None
    fitter.start(torch.randn(16, 3), torch.randn(16))
    assert set(fitter.result()) == {"value/loss", "value/explained_variance"}


def test_a_hung_child_is_closed_within_a_bounded_time():
    fitter = ValueFitter(ValueNetwork(3), lr=1e-2, epochs=1, minibatch_size=8, seed=0, process=True)
    fitter.state()  # the child is up and serving
    os.kill(fitter.child.process.pid, signal.SIGSTOP)  # hung: it reads no request and takes no SIGTERM
    fitter.start(torch.randn(16, 3), torch.randn(16))
    started = time.monotonic()
    fitter.close()
    assert time.monotonic() - started < 12 and not fitter.child.process.is_alive()


def test_sigint_leaves_the_child_serving_and_sigterm_stops_it():
    fitter = ValueFitter(ValueNetwork(3), lr=1e-2, epochs=1, minibatch_size=8, seed=0, process=True)
    fitter.state()
    os.kill(fitter.child.process.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group: the trainer decides
    fitter.start(torch.randn(16, 3), torch.randn(16))
    assert set(fitter.result()) == {"value/loss", "value/explained_variance"}
    os.kill(fitter.child.process.pid, signal.SIGTERM)
    fitter.child.process.join(5)
    assert fitter.child.process.exitcode == -signal.SIGTERM
    with pytest.raises(ChildError, match=r"the value-fit process exited unexpectedly \(exit code -15\)"):
        fitter.state()
    fitter.close()
