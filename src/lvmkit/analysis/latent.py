"""A trained run's encoder as a scikit-learn transformer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from lvmkit.core.errors import DataError
from lvmkit.core.contract import Encoder, require
from lvmkit.runs.run import Run


class LatentEncoder(TransformerMixin, BaseEstimator):
    """Posterior-mean codes of a trained run, batched: ``Pipeline([("enc", LatentEncoder(run)), ...])``.

    Args:
        run: a run directory (or :class:`~lvmkit.Run`) holding a trained model.
        checkpoint: ``"best"`` or ``"last"``.
        batch_size: examples per forward pass.
        device: where the encoder runs.

    ``fit`` loads the model (``model_``); ``transform`` takes arrays of shape (N, *input_shape)
    or flattened (N, prod(input_shape)) and returns codes of shape (N, latent_dim). These are
    posterior means, not sampled codes.
    """

    def __init__(self, run=None, checkpoint: str = "best", batch_size: int = 512, device: str = "cpu") -> None:
        self.run = run
        self.checkpoint = checkpoint
        self.batch_size = batch_size
        self.device = device

    def fit(self, X=None, y=None) -> "LatentEncoder":
        run = self.run if isinstance(self.run, Run) else Run.open(Path(self.run))
        model = run.load_model(self.checkpoint, self.device)
        require(model, Encoder, "LatentEncoder")
        self.model_ = model
        self.n_features_out_ = self.model_.latent_dim
        return self

    def _check(self, X) -> torch.Tensor:
        shape = self.model_.input_shape
        x = np.asarray(X, dtype=np.float32)
        d = int(np.prod(shape))
        if x.ndim == 2 and x.shape[1] == d:
            x = x.reshape(len(x), *shape)
        if tuple(x.shape[1:]) != tuple(shape):
            raise DataError(f"LatentEncoder expects examples of shape {tuple(shape)} (or {d} flattened values); got an array of shape {x.shape}.")
        if not np.isfinite(x).all():
            raise DataError("LatentEncoder input holds NaN or infinite values; clean the data first.")
        return torch.from_numpy(x)

    def transform(self, X) -> np.ndarray:
        if not hasattr(self, "model_"):
            self.fit()
        x = self._check(X)
        with torch.no_grad():
            out = [self.model_.embed(x[i : i + self.batch_size].to(self.device)).cpu() for i in range(0, len(x), self.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.model_.latent_dim), np.float32)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array([f"z{i}" for i in range(self.model_.latent_dim)], dtype=object)
