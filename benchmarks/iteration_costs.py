"""What a training iteration costs besides simulation, and what simulation costs under whose actions.

    python benchmarks/iteration_costs.py [--env HalfCheetah-v4] [--checkpoint DIR] [--rollouts 60]

(1) env.step per steps_per_env x num_envs steps of the preset's vector env, with random actions (as
    throughput.py's (a)), the untrained policy's actions and, with --checkpoint (a run's checkpoints
    directory), a trained policy's: each its own vector env, rollouts interleaved, env.step timed;
(2) the trainer's pieces on a rollout of the preset, medians: values + GAE (`advantage_batch`), the
    policy step (`trpo_step`) and the value fit (`fit_value` with the preset's settings, which
    algo.value_process runs in a child process), and two pieces of a K-FAC-preconditioned step: one
    Fisher-vector product and the K-FAC factors with their inverses (`kfac_preconditioner`).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from throughput import preset
from trpo import checkpoint, collector, stepping
from trpo.curvature import fisher_vector_product
from trpo.kfac import kfac_preconditioner
from trpo.models import build_models
from trpo.workers import make_envs
from trpo.train import advantage_batch
from trpo.update import fit_value, trpo_step


def median_ms(function, calls: int) -> float:
    for _ in range(5):
        function()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def simulator_costs(config, policies: dict, rollouts: int) -> dict[str, float]:
    """Median env.step seconds per rollout for each source of actions (None: uniform random)."""
    runs, spent = {}, {}
    for name, policy in policies.items():
        envs = make_envs(config.env_id, config.env, config.algo.gamma)
        step = envs.step

        def timed_step(action, step=step, name=name):
            started = time.perf_counter()
            result = step(action)
            spent[name] += time.perf_counter() - started
            return result

        envs.step = timed_step
        if policy is None:
            envs.reset(seed=0)
            space, rng = envs.single_action_space, np.random.default_rng(0)
            shape = (config.steps_per_env, envs.num_envs, *space.shape)
            runs[name] = lambda envs=envs, space=space, rng=rng, shape=shape: [
                envs.step(action) for action in rng.uniform(space.low, space.high, shape).astype(space.dtype)]
        else:
            state = stepping.start(envs, 0)
            runs[name] = lambda envs=envs, policy=policy, state=state: collector.collect(
                envs, policy, state, config.steps_per_env)
    times = {name: [] for name in runs}
    for rollout in range(rollouts):
        for name, run in runs.items():
            spent[name] = 0.0
            run()
            if rollout >= 5:  # past the first resets and allocations
                times[name].append(spent[name])
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--checkpoint", type=Path, help="a run's checkpoints directory: its policy acts too")
    parser.add_argument("--rollouts", type=int, default=60, help="rollouts per source of actions")
    args = parser.parse_args()
    try:  # before any work: a bad directory is a clear error, not a traceback
        saved = checkpoint.load(args.checkpoint) if args.checkpoint else None
    except ValueError as error:
        parser.error(f"--checkpoint {args.checkpoint}: {error}")
    torch.set_num_threads(1)
    config = preset(args.env, 10**6, [])
    probe = make_envs(config.env_id, config.env, config.algo.gamma)
    policy, value = build_models(config, probe.single_observation_space, probe.single_action_space)
    policies = {"random actions": None, "untrained policy": policy}
    if saved is not None:
        trained, _ = build_models(config, probe.single_observation_space, probe.single_action_space)
        trained.load_state_dict(saved["policy"])
        policies[f"policy of {args.checkpoint}"] = trained
    steps = config.steps_per_env * config.env.num_envs
    print(f"{config.env_id}, preset conf/env/{config.env_id}.yaml, {steps} steps per iteration, "
          f"torch {torch.__version__}")
    print("(1) env.step per iteration:")
    costs = simulator_costs(config, policies, args.rollouts)
    width = max(map(len, costs))
    for name, seconds in costs.items():
        print(f"    {name:<{width}} {1000 * seconds:7.1f} ms  ({steps / seconds:.0f} steps/s)")

    rollout = collector.collect(probe, policy, stepping.start(probe, 0), config.steps_per_env)
    algo, cpu = config.algo, torch.device("cpu")
    batch = advantage_batch(rollout, value, algo, cpu)
    saved_policy, saved_value = ({k: v.clone() for k, v in m.state_dict().items()} for m in (policy, value))
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(value.parameters(), lr=algo.value_lr)

    def policy_step():
        policy.load_state_dict(saved_policy)
        trpo_step(policy, batch["obs"], batch["actions"], batch["log_probs"], batch["advantages"], algo, generator)

    def value_fit():
        value.load_state_dict(saved_value)
        fit_value(value, optimizer, batch["obs"], batch["returns"], algo.value_epochs, algo.value_minibatch_size,
                  generator)

    direction = torch.randn(sum(p.numel() for p in policy.parameters()), generator=generator)
    print("(2) the trainer's pieces per iteration (medians):")
    pieces = (("values + GAE (advantage_batch)", lambda: advantage_batch(rollout, value, algo, cpu), 300),
              ("policy step (trpo_step)", policy_step, 200),
              (f"value fit ({algo.value_epochs} epochs)", value_fit, 40),
              ("one Fisher-vector product", lambda: fisher_vector_product(policy, batch["obs"], direction,
                                                                          algo.damping, "mlp"), 200),
              ("K-FAC factors and inverses", lambda: kfac_preconditioner(policy, batch["obs"], algo.damping), 200))
    for name, function, calls in pieces:
        print(f"    {name:<40} {median_ms(function, calls):7.2f} ms")


if __name__ == "__main__":
    main()
