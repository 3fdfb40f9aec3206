"""Mathematical oracles for the shared distributions, the MMD and the composed VAE.

Every check compares against an independent answer: a closed form, a Monte Carlo estimate with
a tolerance derived from its standard error, ``torch.distributions``, or the exact marginal
likelihood of probabilistic PCA (Tipping & Bishop 1999), which a VAE with linear encoder and
decoder and a Gaussian likelihood can represent exactly.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

import lvmkit

DTYPE = torch.float64
N_SE = 4.0  # Monte Carlo tolerance, in standard errors


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Hundreds of tiny tensor ops: intra-op threads only add contention on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mean_se(samples: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mean and its standard error along ``dim``."""
    n = samples.shape[dim]
    return samples.mean(dim), samples.std(dim) / math.sqrt(n)


# -- analytic KL vs Monte Carlo ------------------------------------------------------------------
def _mc_kl(m1, lv1, m2, lv2, n: int, seed: int):
    """E_q[log q(z) - log p(z)] with z ~ q, using torch.distributions as the density oracle."""
    q, p = Normal(m1, torch.exp(0.5 * lv1)), Normal(m2, torch.exp(0.5 * lv2))
    eps = torch.randn(n, *m1.shape, generator=_gen(seed), dtype=DTYPE)
    z = m1 + torch.exp(0.5 * lv1) * eps  # (n, rows, dim)
    return _mean_se((q.log_prob(z) - p.log_prob(z)).sum(-1))


def test_kl_std_normal_matches_monte_carlo():
    g = _gen(0)
    mean = torch.randn(4, 3, generator=g, dtype=DTYPE)
    logvar = torch.randn(4, 3, generator=g, dtype=DTYPE)
    kl = lvmkit.kl_std_normal(mean, logvar)
    assert kl.shape == (4,)
    zeros = torch.zeros_like(mean)
    mc, se = _mc_kl(mean, logvar, zeros, zeros, n=100_000, seed=1)
    assert torch.all((kl - mc).abs() <= N_SE * se), (kl, mc, se)
    # The closed form is exact: KL(N(0, I) || N(0, I)) = 0 and it agrees with torch's.
    assert torch.allclose(lvmkit.kl_std_normal(zeros, zeros), torch.zeros(4, dtype=DTYPE))
    exact = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(kl, exact, rtol=1e-12, atol=1e-12)


def test_kl_normal_matches_monte_carlo():
    g = _gen(2)
    m1, m2 = torch.randn(2, 4, 3, generator=g, dtype=DTYPE)
    lv1, lv2 = 0.7 * torch.randn(2, 4, 3, generator=g, dtype=DTYPE)
    kl = lvmkit.kl_normal(m1, lv1, m2, lv2)
    assert kl.shape == (4,)
    mc, se = _mc_kl(m1, lv1, m2, lv2, n=100_000, seed=3)
    assert torch.all((kl - mc).abs() <= N_SE * se), (kl, mc, se)
    # KL is not symmetric: the reversed divergence is a different number here.
    assert not torch.allclose(kl, lvmkit.kl_normal(m2, lv2, m1, lv1))
    # Against a standard normal it reduces to kl_std_normal, and KL(q || q) = 0.
    zeros = torch.zeros_like(m1)
    assert torch.allclose(lvmkit.kl_normal(m1, lv1, zeros, zeros), lvmkit.kl_std_normal(m1, lv1))
    assert torch.allclose(lvmkit.kl_normal(m1, lv1, m1, lv1), torch.zeros(4, dtype=DTYPE))


# -- densities and logmeanexp --------------------------------------------------------------------
def test_log_normal_matches_torch_distributions():
    g = _gen(4)
    x, mean = torch.randn(2, 6, 5, generator=g, dtype=DTYPE)
    logvar = torch.randn(6, 5, generator=g, dtype=DTYPE)
    expected = Normal(mean, torch.exp(0.5 * logvar)).log_prob(x).sum(-1)
    got = lvmkit.log_normal(x, mean, logvar)
    assert got.shape == (6,)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    # Broadcasting over leading sample dimensions, as the importance sampler uses it.
    xs = torch.randn(3, 6, 5, generator=g, dtype=DTYPE)
    assert torch.allclose(
        lvmkit.log_normal(xs, mean, logvar), Normal(mean, torch.exp(0.5 * logvar)).log_prob(xs).sum(-1)
    )
    assert torch.allclose(lvmkit.log_std_normal(x), Normal(0.0, 1.0).log_prob(x).sum(-1), rtol=1e-12)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_logmeanexp_matches_naive_and_is_stable(dim):
    x = torch.randn(7, 5, 3, generator=_gen(5), dtype=DTYPE)
    naive = torch.log(torch.exp(x).mean(dim))
    assert torch.allclose(lvmkit.logmeanexp(x, dim), naive, rtol=1e-12, atol=1e-12)
    # Shift equivariance where the naive formula overflows (exp(1000) = inf).
    shifted = lvmkit.logmeanexp(x + 1000.0, dim)
    assert torch.isfinite(shifted).all()
    assert torch.allclose(shifted, naive + 1000.0, rtol=1e-12)
    # The mean of equal values is that value.
    const = torch.full((4, 9), -3.0, dtype=DTYPE)
    assert torch.allclose(lvmkit.logmeanexp(const, 1), const[:, 0])


# -- the reparameterised sampler -----------------------------------------------------------------
def test_reparameterize_gradients_are_exact():
    g = _gen(6)
    mean = torch.randn(3, 4, generator=g, dtype=DTYPE, requires_grad=True)
    logvar = torch.randn(3, 4, generator=g, dtype=DTYPE, requires_grad=True)
    eps = torch.randn(3, 4, generator=g, dtype=DTYPE)
    assert torch.autograd.gradcheck(lambda m, lv: lvmkit.reparameterize(m, lv, eps), (mean, logvar))
    z = lvmkit.reparameterize(mean, logvar, eps)
    assert torch.allclose(z, mean + torch.exp(0.5 * logvar) * eps, rtol=1e-14)
    # z is elementwise, so the gradient of sum(z) holds dz/dmean and dz/dlogvar entry by entry.
    z.sum().backward()
    assert torch.allclose(mean.grad, torch.ones_like(mean), rtol=1e-14)
    assert torch.allclose(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps, rtol=1e-12)


def test_reparameterize_without_eps_samples_the_posterior():
    torch.manual_seed(7)
    mean = torch.tensor([[-1.0, 2.0, 0.5]], dtype=DTYPE).expand(50_000, 3)
    logvar = torch.tensor([[0.0, -2.0, 1.5]], dtype=DTYPE).expand(50_000, 3)
    z = lvmkit.reparameterize(mean, logvar)
    m, se = _mean_se(z)
    assert torch.all((m - mean[0]).abs() <= N_SE * se)
    # Var of the sample variance of a Gaussian is 2 var^2 / (n - 1).
    var = torch.exp(logvar[0])
    assert torch.all((z.var(0) - var).abs() <= N_SE * var * math.sqrt(2.0 / (z.shape[0] - 1)))


# -- maximum mean discrepancy --------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_of_identical_distributions_is_zero_in_expectation(kernel):
    g = _gen(8)
    est = torch.stack([
        lvmkit.mmd2_unbiased(torch.randn(80, 2, generator=g, dtype=DTYPE),
                             torch.randn(80, 2, generator=g, dtype=DTYPE), kernel=kernel)
        for _ in range(60)
    ])
    m, se = _mean_se(est)
    assert abs(m) <= N_SE * se, (m, se)
    # Unbiased, not merely nonnegative: single estimates fall on both sides of zero.
    assert (est < 0).any() and (est > 0).any()


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_grows_with_the_shift(kernel):
    g = _gen(9)
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    direction = torch.tensor([0.6, 0.8], dtype=DTYPE)
    means = []
    for _ in range(20):
        x = torch.randn(100, 2, generator=g, dtype=DTYPE)
        y0 = torch.randn(100, 2, generator=g, dtype=DTYPE)
        # Common random numbers: the same base samples for every shift.
        means.append(torch.stack([lvmkit.mmd2_unbiased(x, y0 + s * direction, kernel=kernel) for s in shifts]))
    avg = torch.stack(means).mean(0)
    assert torch.all(avg[1:] > avg[:-1]), avg


@pytest.mark.parametrize(("delta", "dim", "scale"), [(1.0, 1, 1.0), (2.0, 3, 1.5), (0.7, 2, 0.8)])
def test_mmd_rbf_matches_closed_form_for_gaussians(delta, dim, scale):
    sigma = 0.9
    g = _gen(10 + dim)
    shift = torch.zeros(dim, dtype=DTYPE)
    shift[0] = delta
    # Unequal sample sizes catch a swapped n/m normalisation.
    est = torch.stack([
        lvmkit.mmd2_unbiased(sigma * torch.randn(120, dim, generator=g, dtype=DTYPE),
                             sigma * torch.randn(90, dim, generator=g, dtype=DTYPE) + shift,
                             kernel="rbf", scale=scale)
        for _ in range(40)
    ])
    m, se = _mean_se(est)
    closed = lvmkit.mmd2_rbf_gaussians(delta, sigma, dim, scale)
    assert closed > 0.0
    assert abs(m.item() - closed) <= N_SE * se.item(), (m, se, closed)
    assert lvmkit.mmd2_rbf_gaussians(0.0, sigma, dim, scale) == 0.0


def test_mmd_rbf_closed_form_matches_numerical_expectation():
    # Independent of the sampler: E k(x, y) for x - y ~ N(delta e1, 2 sigma^2 I), computed by
    # Gauss-Hermite quadrature per dimension (the kernel factorises over dimensions).
    delta, sigma, dim, scale = 1.3, 0.6, 2, 1.2
    t, w = np.polynomial.hermite_e.hermegauss(60)  # weight exp(-t^2 / 2)
    w = w / w.sum()
    sd = math.sqrt(2.0) * sigma

    def ek(mu: float) -> float:
        return float(np.sum(w * np.exp(-((mu + sd * t) ** 2) / (2.0 * scale**2))))

    same = ek(0.0) ** dim
    cross = ek(delta) * ek(0.0) ** (dim - 1)
    assert lvmkit.mmd2_rbf_gaussians(delta, sigma, dim, scale) == pytest.approx(2 * same - 2 * cross, rel=1e-10)


def test_biased_mmd_is_defined_for_one_sample_and_the_regularizer_uses_it():
    x, y = torch.tensor([[0.3, -1.0]], dtype=DTYPE), torch.tensor([[1.0, 0.5]], dtype=DTYPE)
    d2 = float(((x - y) ** 2).sum())
    # one sample each: k(x, x) = k(y, y) = 1, so MMD^2_b = 2 (1 - k(x, y))
    assert lvmkit.mmd2_biased(x, y, "rbf", 1.5).item() == pytest.approx(2 * (1 - math.exp(-d2 / (2 * 1.5**2))))
    c = 2.0 * 2 * 1.0**2
    assert lvmkit.mmd2_biased(x, y, "imq").item() == pytest.approx(2 * (1 - c / (c + d2)))
    with pytest.raises(ValueError, match=r"needs at least 2 samples on each side; got 1 and 1"):
        lvmkit.mmd2_unbiased(x, y)
    # the V-statistic = the U-statistic plus the diagonal terms it drops (n = 5, m = 4)
    g = _gen(12)
    a, b = torch.randn(5, 2, generator=g, dtype=DTYPE), torch.randn(4, 2, generator=g, dtype=DTYPE)
    k = lambda u, v: torch.exp(-torch.cdist(u, v).pow(2) / 2)  # noqa: E731  rbf, scale 1
    by_hand = ((k(a, a).sum() - 5) / 20) * 20 / 25 + 5 / 25 + ((k(b, b).sum() - 4) / 12) * 12 / 16 + 4 / 16 - 2 * k(a, b).mean()
    assert lvmkit.mmd2_biased(a, b, "rbf").item() == pytest.approx(by_hand.item())
    reg = lvmkit.REGULARIZERS.get("mmd")(weight=10.0)
    penalty, terms = reg(x.float(), x.float(), None, 0, x.float())
    assert torch.isfinite(penalty) and terms["mmd"].item() >= 0 and penalty.item() == pytest.approx(10 * terms["mmd"].item())


# -- probabilistic PCA: a VAE with an exactly known likelihood -----------------------------------
D, L, SIGMA = 5, 2, 0.5
# "Exact" agreement in float64, loosened because the Gaussian likelihood stores log(sigma) as a
# float32 buffer (created before .double()), which costs about 1e-8 in log p(x|z).
TIGHT = 1e-6


def _ppca(w: torch.Tensor, b: torch.Tensor) -> lvmkit.LatentVariableModel:
    cfg = lvmkit.make_config({"model": {
        "kind": "vae", "latent_dim": L, "network": "mlp", "hidden": [],
        "likelihood": "gaussian", "sigma": SIGMA, "learn_sigma": False,
    }})
    model = lvmkit.build_model(cfg.model, (D,)).double().eval()
    enc, dec = model.encoder[1], model.decoder[0]
    assert isinstance(enc, torch.nn.Linear) and enc.weight.shape == (2 * L, D)
    assert isinstance(dec, torch.nn.Linear) and dec.weight.shape == (D, L)
    with torch.no_grad():
        dec.weight.copy_(w)
        dec.bias.copy_(b)
    return model


def _set_encoder(model, a_mean, c_mean, a_logvar, c_logvar) -> None:
    """mean = a_mean x + c_mean, logvar = a_logvar x + c_logvar."""
    with torch.no_grad():
        model.encoder[1].weight.copy_(torch.cat([a_mean, a_logvar]))
        model.encoder[1].bias.copy_(torch.cat([c_mean, c_logvar]))


def _random_encoder(model, w, b, seed: int) -> None:
    """A non-optimal q(z|x): the exact posterior's mean map and marginal variances, perturbed at
    random and made broader (a broad proposal keeps the importance weights well behaved)."""
    g = _gen(seed)
    m_inv = torch.linalg.inv(w.T @ w + SIGMA**2 * torch.eye(L, dtype=DTYPE))
    a_mean = m_inv @ w.T + 0.05 * torch.randn(L, D, generator=g, dtype=DTYPE)
    c_mean = -(m_inv @ w.T) @ b + 0.1 * torch.randn(L, generator=g, dtype=DTYPE)
    c_logvar = torch.log(SIGMA**2 * torch.diagonal(m_inv)) + 1.0
    _set_encoder(model, a_mean, c_mean, 0.05 * torch.randn(L, D, generator=g, dtype=DTYPE), c_logvar)


def _marginal(w, b) -> MultivariateNormal:
    """p(x) = N(b, W W^T + sigma^2 I)."""
    return MultivariateNormal(b, w @ w.T + SIGMA**2 * torch.eye(D, dtype=DTYPE))


def _posterior(w, b, x) -> MultivariateNormal:
    """p(z | x) = N(M^-1 W^T (x - b), sigma^2 M^-1), M = W^T W + sigma^2 I (Tipping & Bishop)."""
    m_inv = torch.linalg.inv(w.T @ w + SIGMA**2 * torch.eye(L, dtype=DTYPE))
    return MultivariateNormal((x - b) @ (m_inv @ w.T).T, SIGMA**2 * m_inv)


def _data(w, b, n: int, seed: int) -> torch.Tensor:
    g = _gen(seed)
    z = torch.randn(n, L, generator=g, dtype=DTYPE)
    return z @ w.T + b + SIGMA * torch.randn(n, D, generator=g, dtype=DTYPE)


def _problem(seed: int):
    g = _gen(seed)
    w = torch.randn(D, L, generator=g, dtype=DTYPE)
    b = torch.randn(D, generator=g, dtype=DTYPE)
    return w, b, _data(w, b, 6, seed + 1)


def _expected_elbo_oracle(model, w, b, x) -> torch.Tensor:
    """E_q[ELBO] = log p(x) - KL(q(z|x) || p(z|x)), both sides exact."""
    with torch.no_grad():
        mean, logvar = model.encode(x)
    q = MultivariateNormal(mean, torch.diag_embed(torch.exp(logvar)))
    return _marginal(w, b).log_prob(x) - kl_divergence(q, _posterior(w, b, x))


def _repeat(model_fn, x, reps: int) -> torch.Tensor:
    """(reps, batch) independent per-example estimates from one batched call."""
    return model_fn(x.repeat(reps, 1)).view(reps, x.shape[0])


def test_ppca_elbo_is_below_exact_log_likelihood():
    torch.manual_seed(11)
    w, b, x = _problem(12)
    model = _ppca(w, b)
    _random_encoder(model, w, b, 13)
    log_px = _marginal(w, b).log_prob(x)
    out = model.elbo(x)
    assert torch.allclose(out["elbo"], out["log_px_given_z"] - out["kl"])
    assert torch.allclose(out["kl"], lvmkit.kl_std_normal(*model.encode(x)))
    elbo, se = _mean_se(_repeat(lambda xr: model.elbo(xr)["elbo"], x, 2000))
    assert torch.all(elbo <= log_px + N_SE * se), (elbo, log_px, se)
    # The gap is exactly KL(q || true posterior): a random encoder leaves a clear one.
    oracle = _expected_elbo_oracle(model, w, b, x)
    assert torch.all((elbo - oracle).abs() <= N_SE * se), (elbo, oracle, se)
    assert torch.all(log_px - oracle > 0.5)


def test_ppca_exact_posterior_makes_the_bounds_tight():
    torch.manual_seed(14)
    g = _gen(15)
    q, _ = torch.linalg.qr(torch.randn(D, L, generator=g, dtype=DTYPE))
    w = q * torch.tensor([2.0, 0.7], dtype=DTYPE)  # orthogonal columns of unequal norm
    b = torch.randn(D, generator=g, dtype=DTYPE)
    x = _data(w, b, 6, 16)
    model = _ppca(w, b)
    m_diag = (w * w).sum(0) + SIGMA**2  # M = W^T W + sigma^2 I is diagonal
    a_mean = w.T / m_diag[:, None]
    _set_encoder(model, a_mean, -a_mean @ b, torch.zeros(L, D, dtype=DTYPE), torch.log(SIGMA**2 / m_diag))

    post = _posterior(w, b, x)
    with torch.no_grad():
        mean, logvar = model.encode(x)
    assert torch.allclose(mean, post.mean, atol=1e-12)
    assert torch.allclose(torch.diag_embed(torch.exp(logvar)), post.covariance_matrix, atol=1e-12)

    log_px = _marginal(w, b).log_prob(x)
    # With q = p(z|x) every importance weight equals p(x): exact for any k and chunking.
    for k, chunk in [(1, None), (7, None), (7, 3), (40, 16)]:
        assert torch.allclose(model.log_likelihood(x, k, chunk=chunk), log_px, rtol=0, atol=TIGHT), (k, chunk)
    # Pointwise, log p(x|z) + log p(z) - log q(z|x) = log p(x) for every z ~ q.
    z = lvmkit.reparameterize(mean, logvar)
    log_joint = model.likelihood.log_prob(model.decode(z), x) + lvmkit.log_std_normal(z)
    pointwise = log_joint - lvmkit.log_normal(z, mean, logvar)
    assert torch.allclose(pointwise, log_px, rtol=0, atol=TIGHT)
    # The ELBO (analytic KL) is tight in expectation: E_q log p(x|z) in closed form minus KL.
    var = torch.exp(logvar)
    e_log_lik = -0.5 * D * math.log(2 * math.pi * SIGMA**2) - (
        ((x - b - mean @ w.T) ** 2).sum(-1) + (var * (w * w).sum(0)).sum(-1)
    ) / (2 * SIGMA**2)
    assert torch.allclose(e_log_lik - lvmkit.kl_std_normal(mean, logvar), log_px, rtol=0, atol=TIGHT)
    elbo, se = _mean_se(_repeat(lambda xr: model.elbo(xr)["elbo"], x, 2000))
    assert torch.all((elbo - log_px).abs() <= N_SE * se), (elbo, log_px, se)


def test_ppca_importance_weighted_bound_rises_with_k_to_the_exact_value():
    torch.manual_seed(17)
    w, b, x = _problem(18)
    model = _ppca(w, b)
    _random_encoder(model, w, b, 19)
    log_px = _marginal(w, b).log_prob(x)
    ks = [1, 5, 50, 500]
    est = [_mean_se(_repeat(lambda xr: model.log_likelihood(xr, k), x, 40)) for k in ks]
    for (m_lo, se_lo), (m_hi, se_hi) in zip(est[:-1], est[1:]):
        assert torch.all(m_hi >= m_lo - N_SE * torch.sqrt(se_lo**2 + se_hi**2)), (m_lo, m_hi)
    means = torch.stack([m for m, _ in est]).mean(1)  # batch average per k
    assert means[1] > means[0] and means[2] > means[1], means
    m1, _ = est[0]
    m500, se500 = est[-1]
    gap1, gap500 = log_px - m1, log_px - m500
    assert torch.all(gap1 > 0.3), gap1  # a bound with room to rise
    # Still a lower bound, and within MC error (plus 0.03 nats of remaining bias) of log p(x).
    assert torch.all(gap500 >= -N_SE * se500), (gap500, se500)
    assert torch.all(gap500 <= N_SE * se500 + 0.03), (gap500, se500)


def test_single_sample_importance_weight_has_the_elbo_expectation():
    torch.manual_seed(20)
    w, b, x = _problem(21)
    x = x[:4]
    model = _ppca(w, b)
    _random_encoder(model, w, b, 22)
    reps = 4000
    iw1 = _repeat(lambda xr: model.log_likelihood(xr, 1), x, reps)
    elbo = _repeat(lambda xr: model.elbo(xr)["elbo"], x, reps)
    (m_iw, se_iw), (m_elbo, se_elbo) = _mean_se(iw1), _mean_se(elbo)
    assert torch.all((m_iw - m_elbo).abs() <= N_SE * torch.sqrt(se_iw**2 + se_elbo**2)), (m_iw, m_elbo)
    oracle = _expected_elbo_oracle(model, w, b, x)
    assert torch.all((m_iw - oracle).abs() <= N_SE * se_iw)
    # The training loss at beta = 1 is the negative batch-mean ELBO (Kingma & Welling eq. 3).
    out = model.train()(x.repeat(reps, 1), step=0)
    assert torch.allclose(out.terms["elbo"], -out.loss.detach())
    se_loss = torch.sqrt((elbo.var(0) / reps).sum()) / x.shape[0]
    assert abs(-out.loss.item() - oracle.mean().item()) <= N_SE * se_loss.item()


def test_fused_bernoulli_nll_matches_log_prob_and_its_gradient():
    from lvmkit.models.parts.likelihoods import Bernoulli

    lik = Bernoulli()
    logits = torch.randn(6, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(lik.mean_nll(logits, x), -lik.log_prob(logits, x).mean())
    assert torch.autograd.gradcheck(lambda l: lik.mean_nll(l, x), (logits,))
    g1, = torch.autograd.grad(lik.mean_nll(logits, x), logits)
    g2, = torch.autograd.grad(-lik.log_prob(logits, x).mean(), logits)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("name", ["bernoulli", "gaussian"])
def test_log_prob_many_scores_each_example_against_each_of_its_parameter_sets(name):
    from torch.distributions import Bernoulli as TorchBernoulli

    from lvmkit.models.parts.likelihoods import LIKELIHOODS

    lik = LIKELIHOODS.get(name)()
    params = torch.randn(3, 5, 1, 2, 2, dtype=torch.float64)  # 5 parameter sets for each of 3 examples
    x = (torch.rand(3, 1, 2, 2, dtype=torch.float64) < 0.5).to(torch.float64)
    many = lik.log_prob_many(params, x)
    assert many.shape == (3, 5)
    for b in range(3):
        for j in range(5):
            if name == "bernoulli":  # the closed form, from torch.distributions
                exact = TorchBernoulli(logits=params[b, j]).log_prob(x[b]).sum()
            else:
                exact = lik.log_prob(params[b, j][None], x[b][None])[0]
            torch.testing.assert_close(many[b, j], exact, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk", [None, 1, 3, 7, 64])
def test_importance_weighted_combines_chunks_into_the_logmeanexp_of_all_weights(chunk):
    from lvmkit.models.parts.evaluation import importance_weighted

    w = torch.randn(5, 37, generator=torch.Generator().manual_seed(0), dtype=DTYPE) * 30  # spread: no naive exp
    drawn = []

    def log_weights(m):
        out = w[:, sum(drawn):sum(drawn) + m]
        drawn.append(m)
        return out

    got = importance_weighted(log_weights, 5, 37, chunk, w.device, w.dtype)
    assert sum(drawn) == 37 and (chunk is None or max(drawn) <= chunk)
    assert torch.allclose(got, torch.logsumexp(w, 1) - math.log(37), rtol=0, atol=1e-12)
    with pytest.raises(lvmkit.ConfigError, match=r"must be positive; got k=0, chunk=None"):
        importance_weighted(log_weights, 5, 0, None, w.device, w.dtype)
