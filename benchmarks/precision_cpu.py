"""bf16 autocast against fp32 on this CPU (issue 22): examples per second of each family's
training step, paired (fp32 and bf16 alternate, ``--reps`` times, median ratio), at the given
thread count. ``train.precision = "bf16"`` would be a default only where it is faster and the
loss curve matches fp32 within noise; ``--curves`` also trains ``--curve-steps`` steps from one
initialisation on the same batches of the config's own data set (Fashion-MNIST, spirals) in fp32,
in bf16, and in fp32 with other batches (the noise).

    python benchmarks/precision_cpu.py --threads 2 [--curves]

Writes benchmarks/results/precision_cpu.json.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from _common import REPO, machine_info, write_json
from gpu_bench import throughput
from profile_steps import _setup


def curve(name: str, precision: str, batch_seed: int, steps: int) -> list[float]:
    torch.manual_seed(0)
    cfg, model, opt, ema, x = _setup(name, real_data=True)
    gen = torch.Generator().manual_seed(batch_seed)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    losses = []
    for s in range(steps):
        xb = x.index_select(0, torch.randint(0, len(x), (cfg.train.batch_size,), generator=gen))
        with cast:
            terms = model.training_step(xb, s, opt)
        losses.append(float(terms["loss"]))
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default="vae,convvae,dcgan,ddpm-cpu,rbm,draw,latent-ode")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--curves", action="store_true")
    ap.add_argument("--curve-steps", type=int, default=100)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "precision_cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.families.split(","):
        fp32, bf16 = [], []
        for _ in range(args.reps):
            fp32.append(throughput(name, "cpu", "fp32", args.seconds)["examples_per_second"])
            bf16.append(throughput(name, "cpu", "bf16", args.seconds)["examples_per_second"])
        ratio = statistics.median(b / f for b, f in zip(bf16, fp32))
        row = {"family": name, "fp32_examples_per_second": fp32, "bf16_examples_per_second": bf16,
               "bf16_speedup_median": ratio}
        if args.curves:
            ref, low, other = (curve(name, "fp32", 1, args.curve_steps), curve(name, "bf16", 1, args.curve_steps),
                               curve(name, "fp32", 2, args.curve_steps))
            tail = max(1, args.curve_steps // 4)
            mean = lambda c: sum(c[-tail:]) / tail  # noqa: E731
            row.update({"final_loss_fp32": mean(ref), "final_loss_bf16": mean(low), "final_loss_fp32_other_batches": mean(other),
                        "bf16_minus_fp32": mean(low) - mean(ref), "noise_fp32_batches": abs(mean(other) - mean(ref))})
        rows.append(row)
        print(name, f"bf16/fp32 {ratio:.2f}x", {k: round(v, 4) for k, v in row.items() if k.startswith(("final", "bf16_minus", "noise"))},
              flush=True)
    write_json(args.out, {"machine": machine_info(), "threads": args.threads,
                          "command": "python benchmarks/precision_cpu.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
                          "rows": rows})


if __name__ == "__main__":
    main()
