"""Where one training step's time goes, per family, on the CPU (issue 22).

Each family's shipped config is built as the loop builds it (optimizers from the family's
groups, EMA where the config keeps one) and fed batches of its data's shape, drawn once and
served as the loop serves them (one index_select per batch). ``torch.profiler`` records
``--steps`` steps after ``--warmup`` steps, at each thread count, and every operator's self time
goes to one bucket:

- matmul/conv: aten::mm, addmm, bmm, matmul, linear, convolution and their backward kernels;
- optimizer: everything under ``Optimizer.step`` (profiler's own annotation);
- EMA: the weight average after the step;
- data: the batch's index_select;
- elementwise/other: every other operator (activations, norms, reductions, copies, autograd's
  accumulation);
- Python/framework: the step's wall time not spent inside any operator (dispatch, autograd
  bookkeeping, the family's Python).

    python benchmarks/profile_steps.py                      # all families, 1 and 2 threads
    python benchmarks/profile_steps.py --families vae,ddpm --threads 1

Writes benchmarks/results/profile_steps.json (--out to change) and prints the table.
"""
from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from _common import REPO, machine_info, write_json

import lvmkit
from lvmkit.core.optim import EMA, Optimizers

# family -> (shipped config, overrides, input shape; None: the data source's own)
CASES = {
    "vae": ("configs/vae_digits.toml", ["model.latent_dim=20", "model.hidden=[400]", "train.batch_size=128"], (1, 28, 28)),
    "convvae": ("configs/convvae_fashion.toml", [], (1, 28, 28)),
    "dcgan": ("configs/dcgan_fashion.toml", [], (1, 28, 28)),
    "ddpm": ("configs/ddpm_fashion.toml", [], (1, 28, 28)),
    "ddpm-cpu": ("configs/ddpm_fashion_cpu.toml", [], (1, 28, 28)),
    "rbm": ("configs/rbm_fashion.toml", [], (1, 28, 28)),
    "ebm": ("configs/ebm_fashion.toml", [], (1, 28, 28)),
    "draw": ("configs/draw_fashion.toml", [], (1, 28, 28)),
    "latent-ode": ("configs/latent_ode_spirals.toml", [], None),
}
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::conv", "aten::_conv",
          "aten::convolution", "aten::cudnn_conv", "aten::mkldnn_conv", "aten::_slow_conv", "aten::thnn_conv",
          "aten::addbmm", "aten::baddbmm", "aten::_addmm")
BUCKETS = ("matmul/conv", "elementwise/other", "optimizer", "EMA", "data", "Python/framework")


def _bucket(event) -> str | None:
    parent = event
    while parent is not None:
        name = parent.name
        if name.startswith("Optimizer.step") or name.startswith("Optimizer.zero_grad"):
            return "optimizer"
        if name == "lvmkit.ema":
            return "EMA"
        if name == "lvmkit.data":
            return "data"
        parent = parent.cpu_parent
    if not event.name.startswith("aten::"):
        return None  # annotations and autograd nodes: their time is their children's
    return "matmul/conv" if event.name.startswith(MATMUL) else "elementwise/other"


@functools.lru_cache(maxsize=4)
def _train_x(data_cfg_json: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    data = lvmkit.load_data(lvmkit.DataConfig.model_validate_json(data_cfg_json))
    return data.train.x, tuple(data.shape)


def _setup(name: str, real_data: bool = False):
    """The family's model, optimizers and EMA as the loop builds them, and training inputs: the
    config's own data set with ``real_data`` (or when the case names no shape), else uniform
    noise of the data's shape (binarized where the config binarizes)."""
    path, overrides, shape = CASES[name]
    cfg = lvmkit.load_config(REPO / path, [*overrides, "train.device=cpu"])
    if shape is None or real_data:
        x, shape = _train_x(cfg.data.model_dump_json())
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.rand((2048, *shape), generator=g)
        if getattr(cfg.data, "binarize", "none") != "none":
            x = (x > 0.5).float()
    model = lvmkit.build_model(cfg.model, shape)
    model.train()
    opt = Optimizers(model.optimizer_groups(), cfg.train, model.optimizer_defaults)
    ema = EMA(model, cfg.train.ema_decay, cfg.train.ema_warmup, cfg.train.ema_start) if cfg.train.ema_decay > 0 else None
    return cfg, model, opt, ema, x


def _one(model, opt, ema, x, batch: int, step: int, gen: torch.Generator) -> None:
    with record_function("lvmkit.data"):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        xb = x.index_select(0, idx)
    model.training_step(xb, step, opt)
    if ema is not None:
        with record_function("lvmkit.ema"):
            ema.update(model, step)


def profile_family(name: str, threads: int, warmup: int, steps: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg, model, opt, ema, x = _setup(name)
    gen = torch.Generator().manual_seed(1)
    batch = cfg.train.batch_size
    for s in range(warmup):
        _one(model, opt, ema, x, batch, s, gen)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for s in range(warmup, warmup + steps):
            _one(model, opt, ema, x, batch, s, gen)
        wall = time.perf_counter() - t0
    totals = dict.fromkeys(BUCKETS, 0.0)
    events = prof.events()
    main_thread = events[0].thread  # intra-op worker threads run inside the main thread's operators
    for ev in events:
        if ev.device_type.name != "CPU" or ev.thread != main_thread:
            continue
        bucket = _bucket(ev)
        if bucket is not None:
            totals[bucket] += ev.self_cpu_time_total / 1e6
    inside = sum(totals.values())
    totals["Python/framework"] = max(0.0, wall - inside)
    n_params = sum(p.numel() for p in model.parameters())
    return {"family": name, "config": CASES[name][0], "threads": threads, "batch_size": batch, "parameters": n_params,
            "steps": steps, "ms_per_step": 1e3 * wall / steps,
            "share": {k: v / wall for k, v in totals.items()}, "seconds": totals}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(CASES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--heavy-steps", type=int, default=2, help="steps for the DDPM and the EBM (seconds each)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "profile_steps.json"))
    args = ap.parse_args()
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        for name in args.families.split(","):
            steps = args.heavy_steps if name in ("ddpm", "ebm") else args.steps
            row = profile_family(name, threads, 1 if name in ("ddpm", "ebm") else args.warmup, steps)
            rows.append(row)
            share = "  ".join(f"{k} {100 * v:4.1f}%" for k, v in row["share"].items())
            print(f"{name:11s} {threads}t {row['ms_per_step']:9.1f} ms/step  {share}", flush=True)
    write_json(Path(args.out), {"machine": machine_info(), "command": "python benchmarks/profile_steps.py", "rows": rows})


if __name__ == "__main__":
    main()
