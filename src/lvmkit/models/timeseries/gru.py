"""A one-layer GRU over a whole sequence with a hand-written backward pass (CPU).

On the CPU, ``nn.GRU`` runs its forward as a loop of small ATen ops and leaves the backward to
autograd, which replays ~20 recorded nodes per time step; for the recognition networks of the
latent ODE (a few dozen units, 100 steps, hundreds of series) that bookkeeping, not arithmetic,
is most of a training iteration. :class:`GRUSequence` computes the same function (PyTorch's
GRU equations, gate order r, z, n):

    r = sigmoid(W_ir u + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz u + b_iz + W_hz h + b_hz)
    n = tanh(W_in u + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

with the input projections of all steps in one matrix product, the gates of each step saved,
and back-propagation through time written out: per step a few elementwise products, one
(B, 3H) x (3H, H) product for the hidden state's gradient and rank-B updates of the weight
gradients.
On CUDA, :func:`gru_sequence` hands over to ``nn.GRU`` (cuDNN fuses the whole sequence).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


class GRUSequence(torch.autograd.Function):
    """out (B, T, H) of a GRU from h0 (B, H) over inputs u (B, T, I); see the module docstring.

    Each step's tensors are small and stay in cache: the forward keeps them per step, and the
    backward accumulates the weight gradients step by step (one rank-B update each) instead of
    materialising (T, B, 3H) gradient arrays, which on a CPU costs more in memory traffic than
    the arithmetic saves.
    """

    @staticmethod
    def forward(ctx, u: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
        b, steps, _ = u.shape
        hidden = h0.shape[-1]
        gi = torch.addmm(b_ih, u.reshape(b * steps, -1), w_ih.t()).view(b, steps, 3 * hidden)
        h, w_hh_t = h0, w_hh.t()
        hs, saved = [], []
        for k in range(steps):
            gh = torch.addmm(b_hh, h, w_hh_t)
            rz = torch.add(gi[:, k, : 2 * hidden], gh[:, : 2 * hidden]).sigmoid_()
            ghn = gh[:, 2 * hidden :]
            n = torch.addcmul(gi[:, k, 2 * hidden :], rz[:, :hidden], ghn).tanh_()
            h = torch.addcmul(n, rz[:, hidden:], h - n)
            hs.append(h)
            saved += [rz, n, ghn]
        ctx.steps = steps
        ctx.save_for_backward(u, h0, w_ih, w_hh, *hs, *saved)
        return torch.stack(hs, dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        steps = ctx.steps
        u, h0, w_ih, w_hh, *rest = ctx.saved_tensors
        hs, saved = rest[:steps], rest[steps:]
        hidden = h0.shape[-1]
        d_w_ih, d_w_hh = torch.zeros_like(w_ih), torch.zeros_like(w_hh)
        d_b_ih, d_b_hh = w_ih.new_zeros(3 * hidden), w_hh.new_zeros(3 * hidden)
        d_u = torch.empty_like(u) if ctx.needs_input_grad[0] else None
        dgh = h0.new_empty(h0.shape[0], 3 * hidden)  # gradient of W_h h + b_h (and, but for the n block, of W_i u + b_i)
        dh = torch.zeros_like(h0)
        for k in range(steps - 1, -1, -1):
            rz, n, ghn = saved[3 * k : 3 * k + 3]
            r, z = rz[:, :hidden], rz[:, hidden:]
            h_prev = hs[k - 1] if k > 0 else h0
            dh = dh + grad_out[:, k]
            dhz = dh * z
            dn = dh - dhz                                                  # d h'/dn = 1 - z
            dan = dn - dn * n * n                                          # through tanh
            torch.mul(dan * ghn, r - r * r, out=dgh[:, :hidden])           # r's pre-activation
            torch.mul(dh * (h_prev - n), z - z * z, out=dgh[:, hidden : 2 * hidden])  # z's
            torch.mul(dan, r, out=dgh[:, 2 * hidden :])                    # W_hn h + b_hn
            d_w_hh.addmm_(dgh.t(), h_prev)
            d_b_hh += dgh.sum(0)
            d_w_ih[: 2 * hidden].addmm_(dgh[:, : 2 * hidden].t(), u[:, k])
            d_w_ih[2 * hidden :].addmm_(dan.t(), u[:, k])
            d_b_ih[: 2 * hidden] += dgh[:, : 2 * hidden].sum(0)
            d_b_ih[2 * hidden :] += dan.sum(0)
            if d_u is not None:
                torch.addmm(torch.mm(dan, w_ih[2 * hidden :]), dgh[:, : 2 * hidden], w_ih[: 2 * hidden], out=d_u[:, k])
            dh = torch.addmm(dhz, dgh, w_hh)
        return d_u, dh, d_w_ih, d_w_hh, d_b_ih, d_b_hh


def gru_sequence(gru: nn.GRU, u: Tensor, h0: Tensor | None = None) -> Tensor:
    """The outputs (B, T, H) of the one-layer, unidirectional, batch-first ``gru`` over ``u``
    (B, T, I) from ``h0`` (B, H; zeros by default), through :class:`GRUSequence` on the CPU and
    ``gru`` itself elsewhere; the parameters (and so checkpoints) are ``gru``'s."""
    if gru.num_layers != 1 or gru.bidirectional or not gru.batch_first or not gru.bias:
        raise ValueError("gru_sequence takes a one-layer, unidirectional, batch-first GRU with biases.")
    if h0 is None:
        h0 = u.new_zeros(u.shape[0], gru.hidden_size)
    if u.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return gru(u, h0[None])[0]
    return GRUSequence.apply(u, h0, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)


__all__ = ["GRUSequence", "gru_sequence"]
