"""Time Fisher-vector products: analytic (J^T M J by jvp + vjp) against autograd (double backprop).

    python benchmarks/fvp.py [--device cpu|cuda] [--threads N]

HalfCheetah sizes (17 observations, 6 actions), Gaussian policies 64x64 and 256x256, batches 2048 and
8192. "product" is one (F + damping I) v once the shared work is done; "solve" is what conjugate
gradient pays per update: building the product (forward pass, KL graph or vjp) plus 11 products.
Both methods are timed in the same run, so their ratio is what to compare across machines.
"""

import argparse

import torch
from torch.utils.benchmark import Timer

from trpo.curvature import fisher_matvec
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
    print("| policy | batch | analytic product (ms) | autograd product (ms) | autograd / analytic "
          "| analytic solve (ms) | autograd solve (ms) | autograd / analytic |")
    print("|---|---|---|---|---|---|---|---|")
    for hidden in ((64, 64), (256, 256)):
        torch.manual_seed(0)
        policy = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=hidden).to(device)
        v = torch.randn(sum(p.numel() for p in policy.parameters()), device=device)
        for batch in (2048, 8192):
            obs = torch.randn(batch, OBS_DIM, device=device)
            (a_prod, a_solve), (b_prod, b_solve) = (time_method(policy, obs, v, m, args.threads)
                                                    for m in ("analytic", "autograd"))
            print(f"| {hidden[0]}x{hidden[1]} | {batch} | {a_prod * 1e3:.3f} | {b_prod * 1e3:.3f} | "
                  f"{b_prod / a_prod:.2f} | {a_solve * 1e3:.2f} | {b_solve * 1e3:.2f} | {b_solve / a_solve:.2f} |")


if __name__ == "__main__":
    main()
