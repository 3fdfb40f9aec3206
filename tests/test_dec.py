"""Deep embedded clustering: its distributions, its two-stage training, its clusters."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lvmkit
from lvmkit.models.autoencoder.dec import soft_assign, target_distribution

from conftest import tiny_config


def test_soft_assignment_and_target_rows_sum_to_one_and_target_sharpens():
    g = torch.Generator().manual_seed(0)
    z, mu = torch.randn(200, 3, generator=g), torch.randn(4, 3, generator=g) * 2
    q = soft_assign(z, mu)
    p = target_distribution(q, q.sum(0))
    torch.testing.assert_close(q.sum(1), torch.ones(200))
    torch.testing.assert_close(p.sum(1), torch.ones(200))
    # sharper: with equal cluster frequencies every row's top probability grows (p ~ q^2);
    # with the frequency normalisation, the mean entropy still falls
    p_eq = target_distribution(q, torch.ones(4))
    assert (p_eq.max(1).values >= q.max(1).values - 1e-7).all()
    ent = lambda a: -(a * a.log()).sum(1)  # noqa: E731
    assert ent(p).mean() < ent(q).mean()
    # Student-t kernel with alpha = 1 by hand for one entry
    d2 = ((z[0] - mu) ** 2).sum(1)
    torch.testing.assert_close(q[0], (1 / (1 + d2)) / (1 / (1 + d2)).sum())


def test_dec_trains_in_two_stages_and_reports_its_clusters(tmp_path):
    cfg = tiny_config(model={"kind": "dec", "latent_dim": 5, "hidden": [64], "likelihood": "bernoulli",
                             "clusters": 10, "pretrain_steps": 200, "dec_interval": 20, "gamma": 0.1},
                      train={"epochs": 30, "batch_size": 64, "patience": 0})
    run = lvmkit.train(cfg, tmp_path / "dec", progress=False)
    m = run.read_metrics()
    assert m[0]["train_dec_kl"] == 0.0 and m[-1]["train_dec_kl"] > 0  # stage 1 then stage 2
    model = run.load_model()
    assert int(model.regularizer.started) == 1
    # the best checkpoint comes from the clustering stage, not from pretraining
    best = lvmkit.load_checkpoint(run.checkpoints / "best.pt")["model"]
    assert int(best["regularizer.started"]) == 1
    res = lvmkit.cluster(run, 10, method="model")["results"]
    assert res["latent"]["method"] == "model" and 0.3 < res["latent"]["acc"] <= 1.0
    with pytest.raises(lvmkit.DataError, match=r"learned 10 clusters; pass --k 10"):
        lvmkit.cluster(run, 5, method="model")


def test_dec_stops_when_assignments_settle(tmp_path):
    cfg = tiny_config(model={"kind": "dec", "latent_dim": 3, "hidden": [32], "clusters": 4, "pretrain_steps": 20,
                             "dec_interval": 5, "dec_tol": 0.5, "gamma": 0.01},
                      train={"epochs": 40, "patience": 0})
    run = lvmkit.train(cfg, tmp_path / "r", progress=False)
    ck = lvmkit.load_checkpoint(run.checkpoints / "last.pt")
    assert ck["state"]["stopped"].startswith("DEC converged")
    assert len(run.read_metrics()) < 40


def test_model_clusters_need_a_clustering_run(trained_run):
    with pytest.raises(lvmkit.ConfigError, match=r"--method model needs a model that is a clustering model .*, but this "
                                                 r"Autoencoder is not \(it was trained without a clustering objective "
                                                 r"\(model.kind = 'dec' learns clusters\); its capabilities: encoder, "
                                                 r"reconstructor, generator, density, evidence-bound, latent-decoder\); "
                                                 r"use --method kmeans or gmm\."):
        lvmkit.cluster(trained_run, 10, method="model")


def test_a_dec_run_has_clusters_only_once_its_clustering_stage_began(tmp_path):
    """Clusters of its own are a capability of the instance: a DEC run stopped in pretraining
    has none, and says why; past pretraining it clusters with its learned centres."""
    from lvmkit.core.contract import ClusterModel, has

    cfg = tiny_config(model={"kind": "dec", "latent_dim": 3, "hidden": [16], "clusters": 4, "pretrain_steps": 10**6},
                      train={"epochs": 1})
    run = lvmkit.train(cfg, tmp_path / "r", progress=False, report=False)
    model = run.load_model()
    assert not has(model, ClusterModel) and "clusters" not in lvmkit.capabilities(model)
    with pytest.raises(lvmkit.ConfigError, match=r"its training stopped before the clustering stage began "
                                                 r"\(model.pretrain_steps = 1000000\), so train it longer"):
        lvmkit.cluster(run, 4, method="model")
    x = run.data().test.x
    model.update(run.data().train.x, 10**6)  # past pretraining: K-means centres on the codes
    assert has(model, ClusterModel) and model.n_clusters == 4
    codes = model.embed(x)
    d2 = ((codes[:, None] - model.regularizer.centres[None]) ** 2).sum(-1)  # Student-t q is monotone in distance
    assert torch.equal(model.predict_clusters(codes), d2.argmin(1))


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (6,)])
def test_clustering_term_weighs_gamma_against_the_per_dimension_reconstruction(shape):
    # IDEC/DCEC (Guo et al. 2017): L_r / D + gamma * KL(P || Q), L_r summed over D dimensions;
    # so loss = recon + gamma * D * KL, whatever the size of an example.
    cfg = tiny_config(model={"kind": "dec", "latent_dim": 3, "hidden": [16], "clusters": 3, "pretrain_steps": 0,
                             "gamma": 0.25})
    model = lvmkit.build_model(cfg.model, shape)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(60, *shape, generator=g)
    assert model.update(x, 0) is None and model.objective_stage == 1  # K-means, first targets
    with torch.no_grad():  # move the encoder away from the frozen target copy
        for p in model.encoder.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    reg = model.regularizer
    with torch.no_grad():  # P from the frozen copy, Q from the current encoder (Xie et al., eq. 2)
        q = soft_assign(model.embed(x), reg.centres)
        qt = soft_assign(reg.target_encoder(x)[:, :3], reg.target_centres)
        p = target_distribution(qt, qt.sum(0))
        kl = (p * (p / q).log()).sum(1).mean()
        penalty, terms = reg(model.embed(x), model.embed(x), None, None, x)
    d = int(np.prod(shape))
    assert float(kl) > 1e-5
    torch.testing.assert_close(terms["dec_kl"], kl)
    torch.testing.assert_close(penalty, 0.25 * d * kl)  # = D * (gamma * KL): IDEC's balance, times D
    out = model(x).terms
    torch.testing.assert_close(out["loss"], out["recon"] + penalty)


class _FirstTargets:
    """Callback: assignments and soft assignments Q of the training set under the first
    clustering targets (K-means' centres on the pretrained codes)."""

    assignments = q = None

    @torch.no_grad()
    def on_epoch_end(self, trainer, record):
        reg = trainer.model.regularizer
        if self.assignments is None and int(reg.refreshes) == 1:
            self.assignments = reg.assignments.clone()
            codes = reg.target_encoder(trainer.data.train.x)[:, : reg.latent_dim]
            self.q = soft_assign(codes, reg.target_centres)


def test_assignments_change_during_the_clustering_stage_at_default_settings(tmp_path):
    # DEC's defaults (gamma 0.1, 1,000 pretraining steps, targets every 140 steps, tol 0.001)
    # and the default train.patience; only the network and the number of epochs are small.
    # 20 steps per epoch: pretraining is epochs 1-50, clustering up to 40 epochs (800 steps).
    cfg = tiny_config(model={"kind": "dec", "latent_dim": 10, "hidden": [64]},
                      train={"epochs": 90, "patience": 10})
    first = _FirstTargets()
    run = lvmkit.train(cfg, tmp_path / "dec", progress=False, callbacks=[first])
    last = lvmkit.load_checkpoint(run.checkpoints / "last.pt")
    best = lvmkit.load_checkpoint(run.checkpoints / "best.pt")
    # Early stopping on the loss did not end the clustering stage (with the targets' refreshes
    # not counted as new objectives it stops after 17 clustering epochs), and the best
    # checkpoint comes from the latest targets, not from pretraining or earlier targets.
    assert not last["state"]["stopped"].startswith("early stopping"), last["state"]["stopped"]
    refreshes = int(last["model"]["regularizer.refreshes"])
    assert refreshes >= 5
    assert int(best["model"]["regularizer.refreshes"]) == refreshes
    # The assignments moved away from K-means' ...
    changed = float((last["model"]["regularizer.assignments"] != first.assignments).float().mean())
    assert changed > 0.02, changed
    # ... because the clustering term sharpened Q towards the targets P, which weigh confident
    # assignments up (Xie et al. 2016, eq. 3): the mean top soft assignment rises from 0.36 to
    # 0.52 here; with the unscaled term (gamma * KL against a summed reconstruction) by 0.01.
    model = run.load_model("last")
    q = soft_assign(model.embed(run.data().train.x), model.regularizer.centres.detach())
    gain = float(q.max(1).values.mean() - first.q.max(1).values.mean())
    assert gain > 0.08, gain
