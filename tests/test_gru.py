"""The hand-written GRU sequence (forward and back-propagation through time) is PyTorch's GRU."""
import pytest
import torch
from torch import nn

from lvmkit.models.timeseries.gru import GRUSequence, gru_sequence


def _gru(inp=4, hidden=6, seed=0):
    torch.manual_seed(seed)
    return nn.GRU(inp, hidden, batch_first=True).double()


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_outputs_and_gradients_equal_nn_gru(steps):
    gru = _gru()
    u = torch.randn(5, steps, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(5, steps, 6, dtype=torch.float64)  # a loss that reads every step
    ref = gru(u, h0[None])[0]
    mine = gru_sequence(gru, u, h0)
    torch.testing.assert_close(mine, ref, rtol=0, atol=1e-13)
    wrt = [u, h0, *gru.parameters()]
    for a, b in zip(torch.autograd.grad((mine * weights).sum(), wrt), torch.autograd.grad((ref * weights).sum(), wrt)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_gradcheck():
    gru = _gru(3, 4, seed=1)
    args = [torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True),
            torch.randn(2, 4, dtype=torch.float64, requires_grad=True),
            *[p.detach().clone().requires_grad_() for p in gru.parameters()]]
    assert torch.autograd.gradcheck(GRUSequence.apply, args)


def test_zero_initial_state_by_default_and_no_input_gradient_needed():
    gru = _gru()
    u = torch.randn(3, 4, 4, dtype=torch.float64)  # data: no gradient asked
    torch.testing.assert_close(gru_sequence(gru, u), gru(u)[0], rtol=0, atol=1e-13)
    gru_sequence(gru, u)[:, -1].sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gru.parameters())


def test_other_gru_layouts_are_refused():
    with pytest.raises(ValueError, match="one-layer, unidirectional, batch-first"):
        gru_sequence(nn.GRU(3, 4, num_layers=2, batch_first=True), torch.randn(2, 5, 3))
