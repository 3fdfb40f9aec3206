"""Training time per iteration: lvmkit's latent ODE against torchdiffeq harnesses.

Protocol:
- data: ``data.name = "spirals"`` with all 100 window points observed (the setting of
  torchdiffeq's ``examples/latent_ode.py``; ``--observed 30`` for irregular subsets), 1000
  series, noise std 0.1, curves of the config's 1000 points (``--curve-points 500``: the curve
  the example actually runs with, windows twice as long in time); the same training split (700 series) for every contender; every
  iteration uses the whole training split as one batch, as the example does, in the same
  plain loop (zero_grad, loss, backward, Adam lr 0.01);
- contenders:
  * ``lvmkit``: ``configs/latent_ode_spirals.toml`` (recognition GRU fed the time gaps,
    dynamics 4-20-20-4 ELU, decoder 4-20-2, per-series torchode dopri5, rtol 1e-3, atol 1e-4);
  * ``same-model``: the same lvmkit model and loss, with the latent solve replaced by
    ``torchdiffeq.odeint`` the way the example calls it: one time grid shared by the batch
    (the union of its series' times), dopri5 with torchdiffeq's default rtol 1e-7, atol 1e-9
    (``--harness-rtol``/``--harness-atol`` to change them);
  * ``example``: the example's own model and loop (RNN recognition with 25 units read
    backwards without time gaps, no KL warm-up), its likelihood at the data's noise std 0.1
    instead of its 0.3; regular observations only;
- all on ``--threads`` threads (1), one after the other in this process; reported: the median
  seconds per iteration over iterations 2..N, the number of vector-field evaluations of the
  forward solve, and the extrapolation RMSE on the test split (200 series, the next 100
  points, from the posterior-mean z0) after N iterations; speed-ups are harness / lvmkit.

The goal of issue 5: lvmkit at least 2x faster per iteration at equal or better RMSE.
torchdiffeq is a comparison target, not a dependency: ``.venv/bin/pip install torchdiffeq``.

Run (from the repository root; roughly 0.1-0.5 s per iteration and contender on one core at
the start, the harnesses slowing as their tight tolerances meet learned dynamics: budget
2-4 hours for 2000 iterations of all three):
    .venv/bin/python benchmarks/latent_ode_speed.py --iters 2000 --json benchmarks/results/latent_ode_speed.json
    # short validation of the script (not a measurement):
    .venv/bin/python benchmarks/latent_ode_speed.py --iters 5
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import lvmkit
from lvmkit.data import load_data
from lvmkit.models.timeseries import HELD_OUT, OBSERVED, channels

from _common import REPO, machine_info, write_json

LATENT, NHIDDEN, RNN_HIDDEN, OBS, LR, NOISE = 4, 20, 25, 2, 0.01, 0.1


# -- the torchdiffeq example's model (examples/latent_ode.py) -----------------------------------
class LatentODEfunc(nn.Module):
    def __init__(self):
        super().__init__()
        self.elu = nn.ELU(inplace=True)
        self.fc1, self.fc2, self.fc3 = nn.Linear(LATENT, NHIDDEN), nn.Linear(NHIDDEN, NHIDDEN), nn.Linear(NHIDDEN, LATENT)
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        return self.fc3(self.elu(self.fc2(self.elu(self.fc1(x)))))


class RecognitionRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.i2h = nn.Linear(OBS + RNN_HIDDEN, RNN_HIDDEN)
        self.h2o = nn.Linear(RNN_HIDDEN, LATENT * 2)

    def forward(self, x, h):
        h = torch.tanh(self.i2h(torch.cat((x, h), dim=1)))
        return self.h2o(h), h


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.fc1, self.fc2 = nn.Linear(LATENT, NHIDDEN), nn.Linear(NHIDDEN, OBS)

    def forward(self, z):
        return self.fc2(self.relu(self.fc1(z)))


def log_normal_pdf(x, mean, logvar):
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 / torch.exp(logvar))


def normal_kl(mu1, lv1, mu2, lv2):
    return lv2 / 2 - lv1 / 2 + (torch.exp(lv1) + (mu1 - mu2) ** 2) / (2 * torch.exp(lv2)) - 0.5


def _window(split):
    """Observed values (N, 100, 2) and the shared times of the window (100,) and of all rows (200,)."""
    t, v, c = channels(split.x)
    obs = (c == OBSERVED).all(-1)
    n_obs = int(obs[0].sum())
    if not bool((obs.sum(1) == n_obs).all()) or not bool(obs[:, :n_obs].all()):
        raise SystemExit("the harness needs every window point observed (data.observed_points = window_points)")
    return v[:, :n_obs], t[0, :n_obs], t[0]


def harness(data, iters: int, odeint) -> dict:
    torch.manual_seed(0)
    samp_trajs, samp_ts, all_ts = _window(data.train)
    func, rec, dec = LatentODEfunc(), RecognitionRNN(), Decoder()
    opt = torch.optim.Adam(list(func.parameters()) + list(dec.parameters()) + list(rec.parameters()), lr=LR)

    def encode(trajs):
        h = torch.zeros(trajs.shape[0], RNN_HIDDEN)
        for t in reversed(range(trajs.size(1))):
            out, h = rec(trajs[:, t, :], h)
        return out[:, :LATENT], out[:, LATENT:]

    times, nfe = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        func.nfe = 0
        opt.zero_grad()
        qz0_mean, qz0_logvar = encode(samp_trajs)
        z0 = torch.randn(qz0_mean.size()) * torch.exp(0.5 * qz0_logvar) + qz0_mean
        pred_x = dec(odeint(func, z0, samp_ts).permute(1, 0, 2))
        noise_logvar = torch.full(pred_x.size(), 2.0 * math.log(NOISE))
        logpx = log_normal_pdf(samp_trajs, pred_x, noise_logvar).sum(-1).sum(-1)
        kl = normal_kl(qz0_mean, qz0_logvar, torch.zeros_like(z0), torch.zeros_like(z0)).sum(-1)
        loss = torch.mean(-logpx + kl, dim=0)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        nfe.append(func.nfe)
    with torch.no_grad():
        test_obs, _, _ = _window(data.test)
        z = odeint(func, encode(test_obs)[0], all_ts).permute(1, 0, 2)
        rmse = _extrap_rmse(dec(z), data.test.x)
    return {"seconds_per_iter": statistics.median(times[1:] or times), "nfe_forward_median": statistics.median(nfe),
            "final_loss": float(loss.detach()), "extrap_rmse": rmse}


def _extrap_rmse(pred, x) -> float:
    t, v, c = channels(x)
    last = torch.where((c == OBSERVED).any(-1), t, torch.full_like(t, -math.inf)).amax(1)
    sel = (c == HELD_OUT) & (t > last[:, None])[..., None]
    return math.sqrt(float(((pred - v) ** 2)[sel].mean()))


def config(observed: int, curve_points: int | None = None):
    extra = [] if curve_points is None else [f"data.curve_points={curve_points}"]
    return lvmkit.load_config(REPO / "configs" / "latent_ode_spirals.toml", [f"data.observed_points={observed}", *extra])


def lvmkit_model(observed: int, shape, union_grid_odeint=None, rtol: float = 1e-7, atol: float = 1e-9):
    """lvmkit's latent ODE from the config; with ``union_grid_odeint`` its latent solve is
    torchdiffeq's odeint on the batch's union time grid (the example's way)."""
    cfg = config(observed)
    torch.manual_seed(0)
    model = lvmkit.build_model(cfg.model, shape)
    if union_grid_odeint is not None:
        def latent_path(z0, origin, times):
            if not bool((origin == origin[0]).all()):
                raise SystemExit("the union-grid harness needs one origin for all series, as the example assumes")
            grid, inv = torch.unique(torch.cat([origin[:1], times.flatten()]), return_inverse=True)
            counter = _Counted(model.dynamics)
            zs = union_grid_odeint(counter, z0, grid, rtol=rtol, atol=atol).permute(1, 0, 2)  # (B, G, latent)
            model.solver.counts.forward += counter.n
            idx = inv[1:].view(times.shape)
            return zs.gather(1, idx[..., None].expand(-1, -1, zs.shape[-1]))

        model.latent_path = latent_path  # the harness's solver: an instance attribute shadows the method
    return model


class _Counted(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f, self.n = f, 0

    def forward(self, t, y):
        self.n += 1
        return self.f(t, y)


def train_lvmkit_loop(model, data, iters: int) -> dict:
    """The plain loop for lvmkit's model (either solver)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    x = data.train.x
    times, nfe = [], []
    for step in range(iters):
        t0 = time.perf_counter()
        out = model(x, step)  # forward is the objective (the training contract of issue 9)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        nfe.append(float(out.terms["nfe"]))
    model.eval()
    ev = model.evaluate_split(data.test, k=1)
    return {"seconds_per_iter": statistics.median(times[1:] or times), "nfe_forward_median": statistics.median(nfe),
            "nfe_forward_last": nfe[-1], "final_loss": float(out.terms["loss"]), "extrap_rmse": ev["extrap_rmse"],
            "interp_rmse": ev.get("interp_rmse")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--observed", type=int, default=100)
    p.add_argument("--curve-points", type=int, default=None, help="data.curve_points (default: the config's)")
    p.add_argument("--contenders", nargs="+", default=["lvmkit", "same-model", "example"],
                   choices=["lvmkit", "same-model", "example"])
    p.add_argument("--harness-rtol", type=float, default=1e-7)
    p.add_argument("--harness-atol", type=float, default=1e-9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        from torchdiffeq import odeint
    except ImportError:
        raise SystemExit("the harnesses need torchdiffeq: .venv/bin/pip install torchdiffeq") from None
    torch.set_num_threads(args.threads)
    cfg = config(args.observed, args.curve_points)
    data = load_data(cfg.data, 0)
    results = {}
    for name in args.contenders:
        if name == "lvmkit":
            results[name] = train_lvmkit_loop(lvmkit_model(args.observed, data.shape), data, args.iters)
        elif name == "same-model":
            model = lvmkit_model(args.observed, data.shape, odeint, args.harness_rtol, args.harness_atol)
            results[name] = train_lvmkit_loop(model, data, args.iters)
        else:
            if args.observed != 100:
                print("skipping 'example': it reads regular observations only (use --observed 100)")
                continue
            results[name] = harness(data, args.iters, odeint)
        r = results[name]
        print(f"{name:>11}: {r['seconds_per_iter'] * 1000:8.1f} ms/iteration, median forward nfe {r['nfe_forward_median']:.0f}, "
              f"extrapolation RMSE {r['extrap_rmse']:.4f} after {args.iters} iterations", flush=True)
    if "lvmkit" in results:
        for name in results:
            if name != "lvmkit":
                sp = results[name]["seconds_per_iter"] / results["lvmkit"]["seconds_per_iter"]
                results[name]["speedup_of_lvmkit"] = sp
                print(f"lvmkit vs {name}: {sp:.2f}x per iteration (goal >= 2x at equal or better RMSE)")
    if args.json:
        write_json(args.json, {"protocol": "see benchmarks/latent_ode_speed.py docstring", "iters": args.iters,
                               "observed": args.observed, "curve_points": cfg.data.curve_points, "results": results, "argv": sys.argv, "machine": machine_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
