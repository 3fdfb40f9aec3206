"""The ODE solver layer against exact solutions: convergence order, tolerances, adjoint
gradients, per-sample grids, and failures as errors."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from lvmkit import ODESolver, SolverError
from lvmkit.core.errors import ConfigError

A = torch.tensor([[-0.1, -1.0], [1.0, -0.1]], dtype=torch.float64)  # a damped rotation


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.A = nn.Parameter(A.clone())
        self.b = nn.Parameter(torch.tensor([0.05, -0.02], dtype=torch.float64))

    def forward(self, t, y):
        return y @ self.A.T + self.b


def _problem():
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.3], [-0.2, 0.7]], dtype=torch.float64)
    # Per-series times: off the step grid, one row padded by repeating its last time.
    t_eval = torch.tensor([[0.37, 1.0, 2.11, 3.0], [0.5, 0.9, 1.9, 1.9], [0.05, 0.06, 0.61, 2.4]], dtype=torch.float64)
    t_start = torch.tensor([0.0, 0.2, 0.05], dtype=torch.float64)
    return y0, t_eval, t_start


def _exact(f: Linear, y0, t_eval, t_start) -> torch.Tensor:
    """y(t) = e^{A dt} (y0 + A^-1 b) - A^-1 b for dy/dt = A y + b."""
    a, b = f.A.detach().numpy(), f.b.detach().numpy()
    shift = np.linalg.solve(a, b)
    out = [[scipy.linalg.expm(a * float(t - t0)) @ (y.numpy() + shift) - shift for t in ts]
           for y, ts, t0 in zip(y0, t_eval, t_start)]
    return torch.tensor(np.array(out))


def test_rk4_converges_with_order_four():
    f = Linear()
    y0, t_eval, t_start = _problem()
    exact = _exact(f, y0, t_eval, t_start)
    steps = np.array([0.2, 0.1, 0.05, 0.025])
    errors = []
    for h in steps:
        with torch.no_grad():
            ys = ODESolver("rk4", step_size=float(h)).solve(f, y0, t_eval, t_start)
        errors.append(float((ys - exact).abs().max()))
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]  # evaluation times are off the step grid
    assert 3.7 < slope < 4.3, (slope, errors)


@pytest.mark.parametrize("tol", [1e-4, 1e-6, 1e-8])
def test_dopri5_error_follows_the_tolerance(tol):
    f = Linear()
    y0, t_eval, t_start = _problem()
    solver = ODESolver("dopri5", rtol=tol, atol=tol)
    with torch.no_grad():
        ys = solver.solve(f, y0, t_eval, t_start)
    assert float((ys - _exact(f, y0, t_eval, t_start)).abs().max()) < 20 * tol
    assert solver.counts.forward > 0


def _field(kind: str) -> nn.Module:
    """A field without per_sample_vjp (vmap path) or lvmkit's fields (their fast path)."""
    from lvmkit.models.timeseries import LinearField, MLPField, SumField

    torch.manual_seed(4)
    f = {"generic": Linear, "mlp": lambda: MLPField(2, [8, 8], "tanh"), "linear": lambda: LinearField(2),
         "linear+mlp": lambda: SumField(LinearField(2), MLPField(2, [8], "elu"))}[kind]()
    return f.double()


@pytest.mark.parametrize("method, options, field", [
    ("dopri5", {"rtol": 1e-10, "atol": 1e-10}, "generic"), ("rk4", {"step_size": 0.01}, "generic"),
    ("dopri5", {"rtol": 1e-10, "atol": 1e-10}, "mlp"), ("dopri5", {"rtol": 1e-10, "atol": 1e-10}, "linear"),
    ("dopri5", {"rtol": 1e-10, "atol": 1e-10}, "linear+mlp"),
])
def test_adjoint_gradients_equal_direct_gradients_in_float64(method, options, field):
    y0, t_eval, t_start = _problem()
    g = torch.randn(*t_eval.shape, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = []
    for adjoint in (False, True):
        f = _field(field)
        y = y0.clone().requires_grad_()
        solver = ODESolver(method, adjoint=adjoint, **options)
        (solver.solve(f, y, t_eval, t_start) * g).sum().backward()
        grads.append([p.grad for p in f.parameters()] + [y.grad])
        assert (solver.counts.backward > 0) == adjoint
    for direct, adjoint in zip(*grads):
        # The seminorm leaves the parameter adjoints out of step-size control; the sum field's
        # linear part agrees to ~1e-7 only.
        tol = {"rtol": 1e-6, "atol": 1e-7} if field == "linear+mlp" else {"rtol": 1e-7, "atol": 1e-8}
        torch.testing.assert_close(adjoint, direct, **tol)


def test_each_series_is_solved_on_its_own_grid():
    """A series' solution is the same alone as in any batch (per-sample step sizes)."""
    f = Linear()
    y0, t_eval, t_start = _problem()
    solver = ODESolver("dopri5", rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        together = solver.solve(f, y0, t_eval, t_start)
        for i in range(3):
            alone = solver.solve(f, y0[i : i + 1], t_eval[i : i + 1], t_start[i : i + 1])
            torch.testing.assert_close(alone[0], together[i], rtol=1e-12, atol=1e-12)


def test_rk4_counts_four_evaluations_per_step():
    f = Linear()
    solver = ODESolver("rk4", step_size=0.125)
    y0 = torch.zeros(1, 2, dtype=torch.float64)
    with torch.no_grad():
        solver.solve(f, y0, torch.tensor([[0.5, 1.0]], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    assert solver.counts.forward == 4 * 8


class Blowup(nn.Module):
    def forward(self, t, y):
        return y * y  # y(t) = 1 / (1 - t) from y(0) = 1: infinite at t = 1


class Fast(nn.Module):
    def forward(self, t, y):
        return 1000.0 * torch.stack([-y[:, 1], y[:, 0]], dim=1)  # 1000 rad per time unit


@pytest.mark.parametrize("method, options, field, pattern", [
    ("dopri5", {"max_steps": 50}, Fast(), r"more than model.ode_max_steps = 50 steps .* loosen model.ode_rtol"),
    ("dopri5", {}, Blowup(), r"became NaN or infinite .* lower train.lr"),
    ("rk4", {"step_size": 0.05}, Blowup(), r"became NaN or infinite .* lower train.lr"),
    ("rk4", {"step_size": 0.01, "max_steps": 10}, Fast(), r"rk4 with model.ode_step = 0.01 needs about 300 steps"),
])
def test_a_failed_solve_is_an_error_that_says_what_to_change(method, options, field, pattern):
    y0 = torch.ones(2, 2)
    t_eval = torch.tensor([[0.5, 3.0], [0.2, 0.4]])
    with pytest.raises(SolverError, match=pattern), torch.no_grad():
        ODESolver(method, **options).solve(field, y0, t_eval, torch.zeros(2))


def test_unknown_solver_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"Unknown ODE solver 'euler'; choose one of: dopri5, rk4"):
        ODESolver("euler")
