"""Deep embedded clustering: its distributions, its two-stage training, its clusters."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lvmkit
from lvmkit.models.dec import soft_assign, target_distribution

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
    with pytest.raises(lvmkit.DataError, match=r"--method model needs a run trained with a clustering objective"):
        lvmkit.cluster(trained_run, 10, method="model")
