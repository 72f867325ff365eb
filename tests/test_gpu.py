"""The update on CUDA: same results as on the CPU, and no host synchronization. Skipped without a GPU."""

import pytest
import torch
from torch.nn.utils import parameters_to_vector

from policies import KINDS, tiny_batch, tiny_policy
from trpo.config import AlgoConfig
from trpo.update import trpo_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("method, preconditioner", [("mlp", "none"), ("analytic", "none"), ("autograd", "none"),
                                                     ("mlp", "diagonal"), ("mlp", "kfac")])
@pytest.mark.parametrize("kind", KINDS)
def test_update_on_cuda_matches_cpu_without_host_sync(kind, method, preconditioner):
    config = AlgoConfig(fisher_method=method, cg_preconditioner=preconditioner)
    cpu_policy = tiny_policy(kind)
    batch = tiny_batch(cpu_policy)
    cuda_policy = tiny_policy(kind).cuda()
    cuda_batch = [x.cuda() for x in batch]
    trpo_step(cuda_policy, *cuda_batch, config)  # warm-up: lazy CUDA initialization may synchronize
    cuda_policy = tiny_policy(kind).cuda()
    cpu_stats = trpo_step(cpu_policy, *batch, config)
    torch.cuda.set_sync_debug_mode("error")
    try:
        cuda_stats = trpo_step(cuda_policy, *cuda_batch, config)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(parameters_to_vector(cuda_policy.parameters()).cpu(),
                               parameters_to_vector(cpu_policy.parameters()).detach(), rtol=1e-9, atol=1e-9)
    for key, value in cpu_stats.items():
        torch.testing.assert_close(cuda_stats[key].cpu(), value, rtol=1e-6, atol=1e-9, msg=key)


@pytest.mark.parametrize("process", [False, True])
def test_value_fit_of_a_cuda_value_network(process):
    from trpo.policy import ValueNetwork
    from trpo.value_process import ValueFitter

    generator = torch.Generator().manual_seed(0)
    obs, returns = torch.randn(256, 3, generator=generator), torch.randn(256, generator=generator)
    results = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        value = ValueNetwork(3).to(device)
        fitter = ValueFitter(value, lr=1e-2, epochs=2, minibatch_size=64, seed=1, process=process)
        fitter.start(obs.to(device), returns.to(device))
        results.append((fitter.result()["value/loss"].cpu(), parameters_to_vector(value.parameters()).cpu()))
        fitter.load_state(fitter.state())  # the state round trip works on the device too
        fitter.close()
    (cpu_loss, cpu_params), (cuda_loss, cuda_params) = results
    torch.testing.assert_close(cuda_loss, cpu_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cuda_params, cpu_params, rtol=1e-4, atol=1e-5)
