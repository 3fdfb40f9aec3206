"""Training throughput of the classic 784-400-20 MLP VAE on Fashion-MNIST (issue 2).

Three contenders train the same model (Bernoulli likelihood, batch 128, Adam 1e-3) on the same
training examples, one after the other in this process, each for ``--epochs`` epochs:

- lvmkit: ``lvmkit.train`` as a user calls it; the epoch time is the run's ``train_seconds``
  (the training pass alone: shuffling, binarization, forward, backward, clipping, Adam; not the
  validation pass or the checkpoints).
- plain: the usual hand-written PyTorch loop (the PyTorch examples' VAE): DataLoader over a
  TensorDataset, sigmoid output, ``F.binary_cross_entropy(reduction="sum")``, closed-form KL.
- pythae: Pythae's ``VAE`` with custom encoder/decoder of the same layer sizes, trained by its
  own ``BaseTrainer``; the epoch time is the wall time of ``BaseTrainer.train_step`` (its whole
  pass over its DataLoader), taken by wrapping that bound method. Skipped when pythae is not
  importable (it lives in the benchmark environment .venv-bench only).

With ``--binarize dynamic`` (the default) every contender draws fresh Bernoulli pixels each
epoch from the grey levels, inside its timed pass, all by the same formula (uniform < p, as
lvmkit's data path does): lvmkit per batch (its own data path), plain per batch, Pythae for the
whole training set at the start of each pass (Pythae has no dynamic binarization; this draws
the same number of pixels). ``torch.bernoulli`` would cost the baselines about 3x more CPU time
for the same draws, which is a sampler choice rather than a property of the loops, so it is
not used. With ``--binarize none`` all three train on the grey levels in [0, 1].

The reported epoch time is the median over epochs 2..E (epoch 1 is a warm-up).
Achieved GFLOP/s = FLOPs per epoch / median epoch time, with
FLOPs per epoch = 3 x 2 x (weights in matmuls) x (training examples): forward = 2 FLOPs per
multiply-add, backward ~ 2 x forward. It is compared with the measured float32 GFLOP/s of a
2048 x 2048 torch.mm on the same thread count in the same run.

Run (from the repository root):
    .venv-bench/bin/python benchmarks/throughput.py --epochs 5 --json benchmarks/results/throughput.json
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import lvmkit

from _common import machine_info, matmul_peak, write_json

D, HIDDEN, LATENT = 784, 400, 20
BATCH, LR = 128, 1e-3
# lvmkit always holds out a validation split; the smallest one (a single example) keeps the
# training split at 59,999 of Fashion-MNIST's 60,000 images for all three contenders.
VAL_FRACTION = 1e-6
CONTENDERS = ("plain", "lvmkit", "pythae")
# Weights that take part in matrix products: encoder 784x400, heads 400x(2*20), decoder 20x400, 400x784.
MATMUL_WEIGHTS = D * HIDDEN + HIDDEN * 2 * LATENT + LATENT * HIDDEN + HIDDEN * D


def binarize(p: Tensor) -> Tensor:
    """One Bernoulli(p) draw per pixel, by the formula lvmkit's dynamic binarization uses."""
    return (torch.rand_like(p) < p).to(p.dtype)


def data_config(args) -> dict:
    return {"name": "fashion-mnist", "binarize": args.binarize, "val_fraction": VAL_FRACTION, "limit": args.limit}


# -- lvmkit --------------------------------------------------------------------------------------
def run_lvmkit(args, workdir: Path) -> dict:
    cfg = lvmkit.make_config({
        "data": data_config(args),
        "model": {"kind": "vae", "latent_dim": LATENT, "network": "mlp", "hidden": [HIDDEN], "likelihood": "bernoulli"},
        "train": {"epochs": args.epochs, "batch_size": BATCH, "lr": LR, "patience": 0, "device": "cpu",
                  "threads": args.threads, "seed": args.seed},
    })
    run = lvmkit.train(cfg, out=workdir / "lvmkit", progress=False)
    metrics = run.read_metrics()
    return {"epoch_seconds": [m["train_seconds"] for m in metrics],
            "final_train_loss": metrics[-1]["train_loss"],
            "grad_clip": cfg.train.grad_clip}


# -- (a) the plain PyTorch loop ------------------------------------------------------------------
class PlainVAE(nn.Module):
    """The PyTorch examples' VAE: sigmoid output, probabilities into binary_cross_entropy."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(D, HIDDEN)
        self.fc21 = nn.Linear(HIDDEN, LATENT)
        self.fc22 = nn.Linear(HIDDEN, LATENT)
        self.fc3 = nn.Linear(LATENT, HIDDEN)
        self.fc4 = nn.Linear(HIDDEN, D)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = F.relu(self.fc1(x.view(-1, D)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def plain_loss(recon: Tensor, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    # Negative ELBO summed over the batch (Kingma & Welling 2013, eq. 10; KL from appendix B).
    bce = F.binary_cross_entropy(recon, x.view(-1, D), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def run_plain(args, x: Tensor) -> dict:
    torch.manual_seed(args.seed)
    model = PlainVAE()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x), batch_size=BATCH, shuffle=True)
    dynamic = args.binarize == "dynamic"
    times, loss_per_example = [], 0.0
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        for (xb,) in loader:
            if dynamic:
                xb = binarize(xb)
            opt.zero_grad()
            recon, mu, logvar = model(xb)
            loss = plain_loss(recon, xb, mu, logvar)
            loss.backward()
            total += loss.item()
            opt.step()
        times.append(time.perf_counter() - t0)
        loss_per_example = total / len(x)
    return {"epoch_seconds": times, "final_train_loss": loss_per_example}


# -- (b) Pythae ----------------------------------------------------------------------------------
def pythae_missing() -> str | None:
    try:
        import pythae  # noqa: F401
    except Exception as err:  # ImportError, or a pin conflict surfacing at import time
        return f"{type(err).__name__}: {err}"
    return None


def run_pythae(args, x: Tensor, y: Tensor, workdir: Path) -> dict:
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    for name in ("pythae", "pythae.trainers.base_trainer.base_trainer", "pythae.models.base.base_model"):
        logging.getLogger(name).setLevel(logging.WARNING)

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            BaseEncoder.__init__(self)
            self.fc = nn.Linear(D, HIDDEN)
            self.mean = nn.Linear(HIDDEN, LATENT)
            self.logvar = nn.Linear(HIDDEN, LATENT)

        def forward(self, x: Tensor) -> ModelOutput:
            h = F.relu(self.fc(x.reshape(x.shape[0], -1)))
            return ModelOutput(embedding=self.mean(h), log_covariance=self.logvar(h))

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            BaseDecoder.__init__(self)
            self.fc = nn.Linear(LATENT, HIDDEN)
            self.out = nn.Linear(HIDDEN, D)

        def forward(self, z: Tensor) -> ModelOutput:
            # Pythae's "bce" loss takes probabilities, so the decoder ends in a sigmoid.
            p = torch.sigmoid(self.out(F.relu(self.fc(z))))
            return ModelOutput(reconstruction=p.reshape(z.shape[0], *x.shape[1:]))

    torch.manual_seed(args.seed)
    grey = x
    dynamic = args.binarize == "dynamic"
    dataset = BaseDataset(binarize(grey) if dynamic else grey, y)
    model = VAE(VAEConfig(input_dim=tuple(x.shape[1:]), latent_dim=LATENT, reconstruction_loss="bce"),
                encoder=Encoder(), decoder=Decoder())
    config = BaseTrainerConfig(output_dir=str(workdir / "pythae"), per_device_train_batch_size=BATCH,
                               learning_rate=LR, num_epochs=args.epochs, no_cuda=True, seed=args.seed)
    trainer = BaseTrainer(model, train_dataset=dataset, training_config=config)

    times, losses = [], []
    train_step = trainer.train_step

    def timed_train_step(epoch: int) -> float:
        t0 = time.perf_counter()
        if dynamic:  # the loader reads dataset.data lazily, so this re-binarizes the epoch
            dataset.data = binarize(grey)
        loss = train_step(epoch)
        times.append(time.perf_counter() - t0)
        losses.append(loss)
        return loss

    trainer.train_step = timed_train_step
    trainer.train()
    return {"epoch_seconds": times, "final_train_loss": float(losses[-1])}


# -- the report ----------------------------------------------------------------------------------
def summarize(res: dict, n_train: int, peak_gflops: float) -> None:
    times = res["epoch_seconds"]
    measured = times[1:] if len(times) > 1 else times  # epoch 1 is a warm-up
    med = statistics.median(measured)
    flops = 6.0 * MATMUL_WEIGHTS * n_train
    res.update({"median_epoch_seconds": med, "epochs_in_median": len(measured),
                "examples_per_second": n_train / med, "gflops": flops / med / 1e9,
                "fraction_of_matmul_peak": flops / med / 1e9 / peak_gflops})


def print_table(results: dict, out: dict) -> None:
    n, peak = out["n_train"], out["matmul"]["gflops_best"]
    print(f"\nFashion-MNIST, {n:,} training examples, batch {BATCH}, Adam {LR:g}, {out['epochs']} epochs, "
          f"binarize={out['binarize']}, {out['threads']} threads; {out['machine']['cpu_model']}")
    print(f"{'contender':<10}{'median s/epoch':>16}{'examples/s':>12}{'GFLOP/s':>10}{'of peak':>9}"
          f"{'final loss':>12}  epochs (s)")
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:<10}  skipped: {r['skipped']}")
            continue
        per_epoch = " ".join(f"{t:.2f}" for t in r["epoch_seconds"])
        print(f"{name:<10}{r['median_epoch_seconds']:>16.3f}{r['examples_per_second']:>12,.0f}"
              f"{r['gflops']:>10.1f}{r['fraction_of_matmul_peak']:>9.1%}{r['final_train_loss']:>12.2f}  {per_epoch}")
    span = f"median over epochs 2..{out['epochs']} (epoch 1 is a warm-up)" if out["epochs"] > 1 else "one epoch, no warm-up"
    print(f"{span}; final loss = last epoch's mean training -ELBO per example (nats)")
    for key, text, goal in (("lvmkit_over_pythae", "lvmkit / pythae throughput", "goal >= 1.5"),
                            ("lvmkit_over_plain", "lvmkit / plain throughput", "goal >= 1.0"),
                            ("pythae_cost_over_plain", "pythae / plain epoch time", "issue: ~1.16")):
        if key in out["ratios"]:
            print(f"{text:<28}{out['ratios'][key]:>7.2f}   ({goal})")
    m = out["matmul"]
    print(f"matmul peak: {m['gflops_best']:.1f} GFLOP/s (float32 {m['n']}x{m['n']} torch.mm, best of {m['reps']}; "
          f"median {m['gflops_median']:.1f})")
    print(f"FLOPs per epoch = 3 x 2 x {MATMUL_WEIGHTS:,} matmul weights x {n:,} examples = "
          f"{out['flops_per_epoch'] / 1e9:.1f} GFLOP (forward 2/MAC, backward ~2x forward)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=5, help="epochs per contender (the first is a warm-up); default 5")
    p.add_argument("--threads", type=int, default=2, help="torch threads for every contender; default 2")
    p.add_argument("--binarize", choices=["dynamic", "none"], default="dynamic",
                   help="dynamic: fresh Bernoulli pixels each epoch (default); none: train on grey levels")
    p.add_argument("--limit", type=int, default=None, help="use only this many Fashion-MNIST images (quick checks)")
    p.add_argument("--only", default=",".join(CONTENDERS), help=f"comma-separated subset of {','.join(CONTENDERS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(only) - set(CONTENDERS))
    if unknown:
        p.error(f"--only takes names from {', '.join(CONTENDERS)}; got {', '.join(unknown)}.")
    if args.epochs < 1 or args.threads < 1:
        p.error(f"--epochs and --threads must be >= 1; got {args.epochs} and {args.threads}.")

    torch.set_num_threads(args.threads)
    data = lvmkit.load_data(lvmkit.make_config({"data": data_config(args)}).data, args.seed)
    x, y = data.train.x, data.train.y
    n = len(x)
    out = {"benchmark": "training throughput, 784-400-20 MLP VAE", "epochs": args.epochs, "threads": args.threads,
           "binarize": args.binarize, "limit": args.limit, "n_train": n, "batch_size": BATCH, "lr": LR,
           "seed": args.seed, "command": sys.argv, "machine": machine_info(),
           "matmul_weights": MATMUL_WEIGHTS, "flops_per_epoch": 6.0 * MATMUL_WEIGHTS * n,
           "flops_formula": "3 * 2 * matmul_weights * n_train"}
    print(f"measuring the float32 matmul peak on {args.threads} threads ...", file=sys.stderr)
    out["matmul"] = matmul_peak()

    results: dict[str, dict] = {}
    missing = pythae_missing()
    with tempfile.TemporaryDirectory(prefix="lvmkit-bench-") as tmp:
        for name in [c for c in CONTENDERS if c in only]:
            if name == "pythae" and missing:
                print(f"pythae is not importable here ({missing}); skipping it. "
                      "Set up .venv-bench as benchmarks/README.md says.", file=sys.stderr)
                results[name] = {"skipped": f"pythae not importable ({missing})"}
                continue
            print(f"training {name} for {args.epochs} epochs ...", file=sys.stderr)
            if name == "lvmkit":
                results[name] = run_lvmkit(args, Path(tmp))
            elif name == "plain":
                results[name] = run_plain(args, x)
            else:
                results[name] = run_pythae(args, x, y, Path(tmp))
            summarize(results[name], n, out["matmul"]["gflops_best"])

    ok = {k: r for k, r in results.items() if "skipped" not in r}
    ratios = {}
    if "lvmkit" in ok and "pythae" in ok:
        ratios["lvmkit_over_pythae"] = ok["pythae"]["median_epoch_seconds"] / ok["lvmkit"]["median_epoch_seconds"]
    if "lvmkit" in ok and "plain" in ok:
        ratios["lvmkit_over_plain"] = ok["plain"]["median_epoch_seconds"] / ok["lvmkit"]["median_epoch_seconds"]
    if "pythae" in ok and "plain" in ok:
        ratios["pythae_cost_over_plain"] = ok["pythae"]["median_epoch_seconds"] / ok["plain"]["median_epoch_seconds"]
    out["results"], out["ratios"] = results, ratios
    print_table(results, out)
    if args.json:
        print(f"wrote {write_json(args.json, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
