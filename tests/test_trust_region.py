import pytest
import torch

from trpo.trust_region import full_step, line_search, natural_gradient_step


def scripted(kls, gains):
    """An evaluate() that answers the k-th candidate with kls[k], gains[k] and records the candidates."""
    seen = []

    def evaluate(candidate):
        k = len(seen)
        seen.append(candidate)
        return torch.tensor(kls[k], dtype=torch.float64), torch.tensor(gains[k], dtype=torch.float64)

    return evaluate, seen


PARAMS = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
STEP = torch.tensor([0.5, 0.5, -1.0], dtype=torch.float64)


def test_full_step_puts_the_quadratic_kl_model_on_the_bound():
    generator = torch.Generator().manual_seed(0)
    root = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    A = root @ root.T + torch.eye(4, dtype=torch.float64)
    x = torch.randn(4, generator=generator, dtype=torch.float64)
    s = full_step(x, x @ A @ x, max_kl=0.02)
    torch.testing.assert_close(0.5 * s @ A @ s, torch.tensor(0.02, dtype=torch.float64))
    assert torch.sign(s).equal(torch.sign(x))


def test_takes_the_first_candidate_that_passes():
    evaluate, seen = scripted(kls=[0.5, 0.02, 0.005, 0.001], gains=[1.0, 0.3, 0.2, 0.1])
    result = line_search(evaluate, PARAMS, STEP, torch.tensor(1.0), max_kl=0.01,
                         max_backtracks=4, backtrack_ratio=0.5, accept_ratio=0.1)
    for k, candidate in enumerate(seen):
        torch.testing.assert_close(candidate, PARAMS + 0.5**k * STEP)
    assert result.accepted.item() and result.line_search_steps.item() == 2
    torch.testing.assert_close(result.params, PARAMS + 0.25 * STEP)
    assert result.kl.item() == 0.005 and result.surrogate_gain.item() == 0.2
    assert result.step_fraction.item() == 0.25


def test_requires_a_gain_above_accept_ratio_of_the_expected_gain():
    # Candidate 0 is within the KL bound but gains 0.05 < 0.1 * 1.0; candidate 1 gains 0.06 >= 0.1 * 0.5.
    evaluate, _ = scripted(kls=[0.001, 0.001], gains=[0.05, 0.06])
    result = line_search(evaluate, PARAMS, STEP, torch.tensor(1.0), max_kl=0.01,
                         max_backtracks=2, backtrack_ratio=0.5, accept_ratio=0.1)
    assert result.line_search_steps.item() == 1


@pytest.mark.parametrize("kls, gains", [([0.5, 0.2, 0.1], [1.0, 1.0, 1.0]),  # KL too large
                                         ([0.001] * 3, [-1.0, 0.0, -0.1]),  # no improvement
                                         ([float("nan")] * 3, [float("nan")] * 3)])
def test_nothing_passes_keeps_params_bit_for_bit(kls, gains):
    evaluate, _ = scripted(kls, gains)
    result = line_search(evaluate, PARAMS, STEP, torch.tensor(1.0), max_kl=0.01,
                         max_backtracks=3, accept_ratio=0.0)
    assert torch.equal(result.params, PARAMS)
    assert not result.accepted.item() and result.line_search_steps.item() == 3
    assert result.kl.item() == 0 and result.surrogate_gain.item() == 0 and result.step_fraction.item() == 0


def test_guard_rejects_even_a_passing_candidate():
    evaluate, _ = scripted(kls=[0.001], gains=[1.0])
    result = line_search(evaluate, PARAMS, STEP * float("nan"), torch.tensor(1.0), max_kl=0.01,
                         max_backtracks=1, valid=torch.tensor(False))
    assert torch.equal(result.params, PARAMS) and not result.accepted.item()


def test_natural_gradient_step_takes_the_full_step_even_when_it_loses():
    evaluate, _ = scripted(kls=[0.7], gains=[-0.3])
    result = natural_gradient_step(evaluate, PARAMS, STEP, valid=torch.tensor(True))
    assert torch.equal(result.params, PARAMS + STEP)
    assert result.accepted.item() and result.step_fraction.item() == 1.0 and result.kl.item() == 0.7
    rejected = natural_gradient_step(scripted([0.7], [-0.3])[0], PARAMS, STEP, valid=torch.tensor(False))
    assert torch.equal(rejected.params, PARAMS) and not rejected.accepted.item()


@pytest.mark.parametrize("kls, gains", [([0.5, 0.02, 0.005, 0.001], [1.0, 0.3, 0.2, 0.1]),  # third passes
                                         ([0.001] * 4, [1.0] * 4),  # the full step passes
                                         ([0.5] * 4, [1.0] * 4)])  # none passes
def test_stop_at_first_gives_the_full_search_result_after_fewer_evaluations(kls, gains):
    results, evaluations = [], []
    for stop_at_first in (False, True):
        evaluate, seen = scripted(kls, gains)
        results.append(line_search(evaluate, PARAMS, STEP, torch.tensor(1.0), max_kl=0.01, max_backtracks=4,
                                   backtrack_ratio=0.5, accept_ratio=0.1, stop_at_first=stop_at_first))
        evaluations.append(len(seen))
    full, early = results
    for name in ("params", "kl", "surrogate_gain", "step_fraction", "accepted", "line_search_steps"):
        assert torch.equal(getattr(full, name), getattr(early, name)), name
    passed = int(full.line_search_steps) + 1 if full.accepted else 4
    assert evaluations == [4, passed]
