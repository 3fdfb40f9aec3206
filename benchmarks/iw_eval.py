"""Importance-weighted evaluation throughput of an lvmkit VAE (issue 2).

Times ``model.log_likelihood(x, k)`` (Burda et al. 2015, eq. 8) on the first ``--examples``
test examples two ways, on the same trained model:

- batched: ``--batch-size`` examples per call (all their k samples go through the decoder
  together, in chunks), as ``lvmkit.evaluate`` does;
- one at a time: one call per example, each still drawing its k samples as one batch.

Both are estimates of the same per-example lower bound with independent noise, so their means
must agree within Monte Carlo error: the mean of the paired differences is checked against
its standard error. Throughput is examples per second; GFLOP/s counts the decoder matmuls
only (2 x decoder weights per importance sample), against the measured float32 matmul peak.

The model is the MLP VAE of the training benchmark (784-400-20, Bernoulli, dynamic
binarization, so the test split is binarized once), trained here for ``--train-epochs`` unless
``--run`` names an existing lvmkit run directory of a VAE.

Run (from the repository root):
    .venv/bin/python benchmarks/iw_eval.py --json benchmarks/results/iw_eval.json
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import lvmkit

from _common import machine_info, matmul_peak, write_json

N_SE = 4.0  # tolerance of the agreement check, in standard errors


def train_model(args, workdir: Path) -> lvmkit.Run:
    cfg = lvmkit.make_config({
        "data": {"name": "fashion-mnist", "binarize": "dynamic", "limit": args.limit},
        "model": {"kind": "vae", "latent_dim": 20, "network": "mlp", "hidden": [400], "likelihood": "bernoulli"},
        "train": {"epochs": args.train_epochs, "batch_size": 128, "lr": 1e-3, "patience": 0, "device": "cpu",
                  "threads": args.threads, "seed": args.seed},
    })
    return lvmkit.train(cfg, out=workdir / "vae", progress=False)


def decoder_weights(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.decoder.modules() if isinstance(m, torch.nn.Linear))


def timed(fn, x: torch.Tensor, step: int, seed: int) -> tuple[torch.Tensor, float]:
    """Call ``fn`` on consecutive slices of ``step`` examples; return the results and seconds."""
    fn(x[:step])  # warm-up: first-call allocations out of the timing
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    out = torch.cat([fn(x[i : i + step]) for i in range(0, len(x), step)])
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="an existing lvmkit run directory of a VAE (else one is trained)")
    p.add_argument("--train-epochs", type=int, default=2, help="epochs of the model trained when --run is not given")
    p.add_argument("--limit", type=int, default=None, help="train on only this many images (quick checks)")
    p.add_argument("--examples", type=int, default=500, help="test examples to evaluate; default 500")
    p.add_argument("--k", type=int, default=1000, help="importance samples per example; default 1000")
    p.add_argument("--batch-size", type=int, default=100, help="examples per call in the batched mode; default 100")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)
    for name in ("train_epochs", "examples", "k", "batch_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}.")

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="lvmkit-iw-") as tmp:
        if args.run:
            run = lvmkit.Run.open(args.run)
        else:
            print(f"training a VAE for {args.train_epochs} epochs ...", file=sys.stderr)
            run = train_model(args, Path(tmp))
        torch.set_num_threads(args.threads)  # a run's train.threads may have changed it
        model = run.load_model("best", "cpu")
        x = run.data().test.x[: args.examples]
    n, k = len(x), args.k
    if not model.stochastic:
        p.error(f"--run {args.run} holds a deterministic model ({run.config.model.kind}); pass a VAE run.")

    print(f"measuring the float32 matmul peak on {args.threads} threads ...", file=sys.stderr)
    peak = matmul_peak()
    flops = 2.0 * decoder_weights(model) * k * n
    rows = {}
    for mode, step, seed in (("batched", args.batch_size, args.seed + 1), ("one at a time", 1, args.seed + 2)):
        print(f"IW evaluation, {mode}: {n} examples, k = {k} ...", file=sys.stderr)
        ll, sec = timed(lambda xb: model.log_likelihood(xb, k), x, step, seed)
        rows[mode] = {"examples_per_call": step, "seconds": sec, "examples_per_second": n / sec,
                      "gflops": flops / sec / 1e9, "fraction_of_matmul_peak": flops / sec / 1e9 / peak["gflops_best"],
                      "mean_log_likelihood": float(ll.mean()),
                      "stderr_over_examples": float(ll.std() / math.sqrt(n)) if n > 1 else 0.0, "_ll": ll}

    diff = rows["batched"].pop("_ll") - rows["one at a time"].pop("_ll")
    d_mean = float(diff.mean())
    d_se = float(diff.std() / math.sqrt(n)) if n > 1 else float(diff.abs().max())
    agree = abs(d_mean) <= N_SE * d_se + 1e-4
    speedup = rows["batched"]["examples_per_second"] / rows["one at a time"]["examples_per_second"]

    print(f"\nIW log-likelihood throughput, k = {k}, {n} Fashion-MNIST test examples, {args.threads} threads; "
          f"{machine_info()['cpu_model']}")
    print(f"{'mode':<15}{'per call':>9}{'seconds':>10}{'examples/s':>12}{'GFLOP/s':>10}{'of peak':>9}{'mean log p(x)':>16}")
    for mode, r in rows.items():
        print(f"{mode:<15}{r['examples_per_call']:>9}{r['seconds']:>10.2f}{r['examples_per_second']:>12.1f}"
              f"{r['gflops']:>10.1f}{r['fraction_of_matmul_peak']:>9.1%}"
              f"{r['mean_log_likelihood']:>10.2f} +- {r['stderr_over_examples']:.2f}")
    print(f"batched / one-at-a-time throughput: {speedup:.2f}x")
    print(f"paired difference of the two estimates: {d_mean:+.4f} +- {d_se:.4f} nats "
          f"({'agree' if agree else 'DISAGREE'} within {N_SE:g} standard errors)")
    print(f"matmul peak {peak['gflops_best']:.1f} GFLOP/s; FLOPs = 2 x {decoder_weights(model):,} decoder weights "
          f"x k x examples = {flops / 1e9:.1f} GFLOP (encoder and elementwise work not counted)")

    out = {"benchmark": "importance-weighted evaluation throughput", "k": k, "n_examples": n,
           "batch_size": args.batch_size, "threads": args.threads, "run": str(args.run) if args.run else None,
           "train_epochs": None if args.run else args.train_epochs, "limit": args.limit, "command": sys.argv,
           "machine": machine_info(), "matmul": peak, "flops": flops, "modes": rows, "batched_over_one_at_a_time": speedup,
           "paired_difference": {"mean": d_mean, "stderr": d_se, "agree": agree, "tolerance_se": N_SE}}
    if args.json:
        print(f"wrote {write_json(args.json, out)}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
