"""Deep embedded clustering as a latent regularizer (DEC, Xie et al. 2016; DCEC, Guo et al. 2017).

Two stages in one run: for ``pretrain_steps`` the model trains on reconstruction alone; then
cluster centres are initialised by K-means on the codes of the training set, and the loss
becomes reconstruction + gamma * D * KL(P || Q), where Q are Student-t soft assignments of the
codes to the centres, P the sharpened target distribution, refreshed every ``interval`` steps,
and D the number of data dimensions (see ``DECRegularizer.weight``). Training stops once fewer
than ``tol`` of the assignments change between refreshes.

Every refresh replaces P, so the objective itself changes: ``stage`` counts the refreshes, and
the training loop restarts its best checkpoint and its early-stopping patience at each one. So
validation losses under different targets are never compared: the low loss at the end of
pretraining (no clustering term yet) neither ends the clustering stage nor becomes its best
checkpoint, and early stopping can only act within one set of targets (when ``train.patience``
epochs pass without a refresh).

P is a function of the encoder and centres *as they were at the last refresh*. Rather than a
table of targets per training example, the regularizer keeps a frozen copy of the encoder and
centres from that moment plus the cluster frequencies f, and evaluates P for any batch: the
same numbers DEC stores, for training and validation examples alike, with no example indices.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lvmkit.core.errors import DataError
from lvmkit.models.parts.regularizers import REGULARIZERS, Regularizer


def soft_assign(z: Tensor, centres: Tensor, alpha: float = 1.0) -> Tensor:
    """q_ij proportional to (1 + |z_i - mu_j|^2 / alpha)^(-(alpha + 1) / 2) (Xie et al., eq. 1)."""
    d2 = torch.cdist(z, centres).pow(2)
    q = (1.0 + d2 / alpha).pow(-(alpha + 1.0) / 2.0)
    return q / q.sum(1, keepdim=True)


def target_distribution(q: Tensor, freq: Tensor) -> Tensor:
    """p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j'), f_j = sum_i q_ij over the data (eq. 3)."""
    w = q.pow(2) / freq
    return w / w.sum(1, keepdim=True)


@REGULARIZERS.register("dec")
class DECRegularizer(Regularizer):
    """gamma * D * KL(P || Q) on Student-t cluster assignments (D: data dimensions), after a
    reconstruction-only stage; ``refreshes`` counts the target refreshes (0: still pretraining)."""

    def __init__(self, clusters: int, latent_dim: int, gamma: float = 0.1, pretrain_steps: int = 1000,
                 interval: int = 140, tol: float = 0.001, alpha: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.clusters, self.latent_dim = clusters, latent_dim
        self.gamma, self.pretrain_steps, self.interval, self.tol, self.alpha = gamma, pretrain_steps, interval, tol, alpha
        self.seed = seed
        self.centres = nn.Parameter(torch.zeros(clusters, latent_dim))
        self.register_buffer("target_centres", torch.zeros(clusters, latent_dim))
        self.register_buffer("freq", torch.ones(clusters))
        self.register_buffer("started", torch.zeros((), dtype=torch.long))
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.long))
        self.register_buffer("assignments", torch.zeros(0, dtype=torch.long))
        self.target_encoder: nn.Module | None = None

    @classmethod
    def from_config(cls, cfg) -> "DECRegularizer":
        return cls(cfg.clusters, cfg.latent_dim, cfg.gamma, cfg.pretrain_steps, cfg.dec_interval, cfg.dec_tol)

    @property
    def stage(self) -> int:
        # Each refresh of the targets P is a new objective (see the module docstring).
        return int(self.refreshes)

    @property
    def final(self) -> bool:
        return bool(int(self.started))

    def attach(self, model: nn.Module) -> None:
        self.target_encoder = copy.deepcopy(model.encoder).requires_grad_(False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The assignment vector has one entry per training example: take the saved length.
        key = prefix + "assignments"
        if key in state_dict:
            self.assignments = torch.zeros_like(state_dict[key])
        # Checkpoints written before refreshes were counted: at least one if clustering began.
        if prefix + "refreshes" not in state_dict and prefix + "started" in state_dict:
            state_dict[prefix + "refreshes"] = state_dict[prefix + "started"].clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def _codes(self, encoder: nn.Module, x: Tensor) -> Tensor:
        # Posterior means: the first latent_dim outputs, for stochastic and deterministic encoders.
        return torch.cat([encoder(x[i : i + 1024])[:, : self.latent_dim] for i in range(0, len(x), 1024)])

    @torch.no_grad()
    def update(self, model, x, step):
        if step < self.pretrain_steps:
            return None
        if not int(self.started):
            if len(x) < self.clusters:
                raise DataError(f"DEC needs at least model.clusters = {self.clusters} training examples, got {len(x)}; lower model.clusters.")
            from sklearn.cluster import KMeans

            codes = self._codes(model.encoder, x).cpu().numpy()
            km = KMeans(self.clusters, n_init=10, random_state=self.seed).fit(codes)
            self.centres.copy_(torch.as_tensor(km.cluster_centers_, dtype=self.centres.dtype))
            self.started.fill_(1)
        elif (step - self.pretrain_steps) % self.interval:
            return None
        # Refresh the targets: freeze the current encoder and centres, recompute f and assignments.
        self.refreshes += 1
        self.target_encoder.load_state_dict(model.encoder.state_dict())
        self.target_centres.copy_(self.centres)
        q = soft_assign(self._codes(self.target_encoder, x), self.target_centres, self.alpha)
        self.freq.copy_(q.sum(0))
        new = q.argmax(1)
        previous, self.assignments = self.assignments, new
        if len(previous) == len(new) and step > self.pretrain_steps:
            changed = float((previous != new).float().mean())
            if changed < self.tol:
                return f"DEC converged: {100 * changed:.3f}% of assignments changed (< model.dec_tol = {100 * self.tol:g}%)"
        return None

    def forward(self, z, mean, logvar, step, x):
        if not int(self.started):
            return z.new_zeros(()), {"dec_kl": z.new_zeros(())}
        q = soft_assign(mean, self.centres, self.alpha)
        with torch.no_grad():
            qt = soft_assign(self.target_encoder(x)[:, : self.latent_dim], self.target_centres, self.alpha)
            p = target_distribution(qt, self.freq)
        kl = (p * (torch.log(p.clamp_min(1e-12)) - torch.log(q.clamp_min(1e-12)))).sum(1).mean()
        return self.weight(x) * kl, {"dec_kl": kl}

    def weight(self, x: Tensor) -> float:
        """The weight of the per-example KL for examples like ``x``: gamma * D, D the number of
        dimensions of one example.

        IDEC and DCEC (Guo et al. 2017) minimise L_r + gamma * L_c with gamma = 0.1, where L_r
        is the reconstruction error averaged over the D pixels (Keras 'mse' in the authors'
        code) and L_c the per-example KL(P || Q). The reconstruction here is summed over the D
        dimensions (a log-likelihood), so the same balance is D * (L_r + gamma * L_c): the KL
        weighs gamma * D, and Adam is invariant to the overall factor D. Unscaled, gamma * KL
        was a fraction of a percent of the loss (digits: 0.1 * 0.23 against 16 nats) and the
        clustering stage hardly moved the codes.
        """
        return self.gamma * x[0].numel()

    @torch.no_grad()
    def predict(self, codes: Tensor) -> Tensor:
        """Cluster index of each code (the argmax of its soft assignment)."""
        return soft_assign(codes, self.centres, self.alpha).argmax(1)
