"""Time the Fisher-vector product methods: mlp (J^T M J written out), analytic (jvp + vjp), autograd.

    python benchmarks/fvp.py [--device cpu|cuda] [--threads N]

HalfCheetah sizes (17 observations, 6 actions), Gaussian policies 64x64 and 256x256, batches 256 (the
HalfCheetah preset's Fisher subsample), 2048 and 8192. "product" is one (F + damping I) v once the
shared work is done; "solve" is what conjugate gradient pays per update: building the product (forward
pass, KL graph or vjp) plus 11 products. All methods are timed in the same run, so their ratios are
what to compare across machines.
"""

import argparse

import torch
from torch.utils.benchmark import Timer

from trpo.curvature import FISHER_METHODS, fisher_matvec
from trpo.policy import GaussianPolicy

OBS_DIM, ACT_DIM = 17, 6


def time_method(policy, obs, v, method, threads):
    matvec = fisher_matvec(policy, obs, damping=0.1, method=method)
    scope = {"fisher_matvec": fisher_matvec, "policy": policy, "obs": obs, "v": v, "method": method,
             "matvec": matvec}
    product = Timer("matvec(v)", globals=scope, num_threads=threads).blocked_autorange(min_run_time=1.0)
    solve = Timer("m = fisher_matvec(policy, obs, 0.1, method)\nfor _ in range(11): m(v)",
                  globals=scope, num_threads=threads).blocked_autorange(min_run_time=1.0)
    return product.median, solve.median


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, {args.threads} threads")
    print("| policy | batch | " + " | ".join(f"{m} product (ms)" for m in FISHER_METHODS) + " | "
          + " | ".join(f"{m} solve (ms)" for m in FISHER_METHODS) + " | solve time / mlp's |")
    print("|---" * (2 + 2 * len(FISHER_METHODS) + 1) + "|")
    for hidden in ((64, 64), (256, 256)):
        torch.manual_seed(0)
        policy = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=hidden).to(device)
        v = torch.randn(sum(p.numel() for p in policy.parameters()), device=device)
        for batch in (256, 2048, 8192):
            obs = torch.randn(batch, OBS_DIM, device=device)
            times = {m: time_method(policy, obs, v, m, args.threads) for m in FISHER_METHODS}
            ratios = ", ".join(f"{m} {times[m][1] / times['mlp'][1]:.2f}" for m in FISHER_METHODS if m != "mlp")
            print(f"| {hidden[0]}x{hidden[1]} | {batch} | " + " | ".join(f"{p * 1e3:.3f}" for p, _ in times.values())
                  + " | " + " | ".join(f"{s * 1e3:.2f}" for _, s in times.values()) + f" | {ratios} |")


if __name__ == "__main__":
    main()
