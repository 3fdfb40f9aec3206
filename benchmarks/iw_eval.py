"""Importance-weighted evaluation throughput of an lvmkit VAE (issue 2).

Times ``model.log_likelihood(x, k)`` (Burda et al. 2015, eq. 8) on the first ``--examples``
test examples two ways, on the same trained model:

- batched: ``--batch-size`` examples per call (all their k samples go through the decoder
  together, in chunks), as ``lvmkit.evaluate`` does;
- one at a time: one call per example, each still drawing its k samples as one batch;
- hand-written loop: per example, the k samples in mini-batches of ``--sample-batch`` (100),
  the input repeated through the encoder for each, as Pythae's ``VAE.get_nll`` and many IWAE
  evaluation scripts do; it uses the model's own encode/decode/likelihood.

All are estimates of the same per-example lower bound with independent noise, so their means
must agree within Monte Carlo error: the mean of the paired differences from the batched
estimate is checked against its standard error. Throughput is examples per second; GFLOP/s counts the decoder matmuls
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


@torch.no_grad()
def iw_hand_written(model: lvmkit.LatentVariableModel, x: torch.Tensor, k: int, sample_batch: int) -> torch.Tensor:
    """log p(x) per example, one example at a time, its k samples in mini-batches."""
    sizes = [sample_batch] * (k // sample_batch) + ([k % sample_batch] if k % sample_batch else [])
    out = []
    for i in range(len(x)):
        log_w = []
        for m in sizes:
            xr = x[i : i + 1].expand(m, *x.shape[1:])  # (m, *shape): the example repeated
            mean, logvar = model.encode(xr)
            z = lvmkit.reparameterize(mean, logvar)
            log_px = model.likelihood.log_prob(model.decode(z), xr)
            log_w.append(log_px + lvmkit.log_std_normal(z) - lvmkit.log_normal(z, mean, logvar))
        out.append(torch.logsumexp(torch.cat(log_w), 0) - math.log(k))  # Burda et al. 2015, eq. 8
    return torch.stack(out)


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
    p.add_argument("--sample-batch", type=int, default=100,
                   help="samples per decoder call in the hand-written loop; default 100")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)
    for name in ("train_epochs", "examples", "k", "batch_size", "sample_batch", "threads"):
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
    modes = (("batched", args.batch_size, lambda xb: model.log_likelihood(xb, k)),
             ("one at a time", 1, lambda xb: model.log_likelihood(xb, k)),
             ("hand-written", 1, lambda xb: iw_hand_written(model, xb, k, args.sample_batch)))
    rows, lls = {}, {}
    for i, (mode, step, fn) in enumerate(modes):
        print(f"IW evaluation, {mode}: {n} examples, k = {k} ...", file=sys.stderr)
        lls[mode], sec = timed(fn, x, step, args.seed + 1 + i)
        ll = lls[mode]
        rows[mode] = {"examples_per_call": step, "seconds": sec, "examples_per_second": n / sec,
                      "gflops": flops / sec / 1e9, "fraction_of_matmul_peak": flops / sec / 1e9 / peak["gflops_best"],
                      "mean_log_likelihood": float(ll.mean()),
                      "stderr_over_examples": float(ll.std() / math.sqrt(n)) if n > 1 else 0.0}
    for mode, r in rows.items():
        r["batched_speedup"] = rows["batched"]["examples_per_second"] / r["examples_per_second"]
        if mode != "batched":
            diff = lls["batched"] - lls[mode]
            d_mean = float(diff.mean())
            d_se = float(diff.std() / math.sqrt(n)) if n > 1 else float(diff.abs().max())
            r["paired_difference_from_batched"] = {"mean": d_mean, "stderr": d_se,
                                                   "agree": abs(d_mean) <= N_SE * d_se + 1e-4}
    agree = all(r["paired_difference_from_batched"]["agree"] for m, r in rows.items() if m != "batched")

    print(f"\nIW log-likelihood throughput, k = {k}, {n} Fashion-MNIST test examples, {args.threads} threads; "
          f"{machine_info()['cpu_model']}")
    print(f"{'mode':<15}{'per call':>9}{'seconds':>9}{'examples/s':>12}{'batched x':>10}{'GFLOP/s':>9}"
          f"{'of peak':>9}{'mean log p(x)':>18}{'batched - this':>22}")
    for mode, r in rows.items():
        d = r.get("paired_difference_from_batched")
        check = (f"{d['mean']:+.3f} +- {d['stderr']:.3f} {'ok' if d['agree'] else 'DISAGREE'}") if d else ""
        print(f"{mode:<15}{r['examples_per_call']:>9}{r['seconds']:>9.2f}{r['examples_per_second']:>12.1f}"
              f"{r['batched_speedup']:>10.2f}{r['gflops']:>9.1f}{r['fraction_of_matmul_peak']:>9.1%}"
              f"{r['mean_log_likelihood']:>10.2f} +- {r['stderr_over_examples']:<5.2f}{check:>22}")
    print(f"'batched x' = batched throughput / this mode's; 'batched - this' = mean paired difference of the "
          f"per-example estimates +- its standard error (ok: within {N_SE:g} standard errors)")
    print(f"matmul peak {peak['gflops_best']:.1f} GFLOP/s; FLOPs = 2 x {decoder_weights(model):,} decoder weights "
          f"x k x examples = {flops / 1e9:.1f} GFLOP (encoder and elementwise work not counted)")

    out = {"benchmark": "importance-weighted evaluation throughput", "k": k, "n_examples": n,
           "batch_size": args.batch_size, "threads": args.threads, "run": str(args.run) if args.run else None,
           "train_epochs": None if args.run else args.train_epochs, "limit": args.limit, "command": sys.argv,
           "sample_batch": args.sample_batch, "machine": machine_info(), "matmul": peak, "flops": flops,
           "modes": rows, "batched_over_one_at_a_time": rows["one at a time"]["batched_speedup"],
           "all_agree": agree, "tolerance_se": N_SE}
    if args.json:
        print(f"wrote {write_json(args.json, out)}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
