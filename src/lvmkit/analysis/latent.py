"""A trained run's encoder as a scikit-learn transformer."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from lvmkit.core.errors import DataError, LvmkitWarning
from lvmkit.core.contract import Encoder, require
from lvmkit.runs.run import Run


class LatentEncoder(TransformerMixin, BaseEstimator):
    """Posterior-mean codes of a trained run, batched: ``Pipeline([("enc", LatentEncoder(run)), ...])``.

    Args:
        run: a run directory (or :class:`~lvmkit.Run`) holding a trained model.
        checkpoint: ``"best"`` or ``"last"``.
        batch_size: examples per forward pass.
        device: where the encoder runs.
        warn_out_of_range: warn (:class:`~lvmkit.LvmkitWarning`, with the count) when values
            passed to ``transform`` lie outside the training data's range.

    ``fit`` loads the model (``model_``); ``transform`` takes arrays of shape (N, *input_shape)
    or flattened (N, prod(input_shape)) in the model's units, as the run's splits hold them
    (lvmkit's digits are scikit-learn's pixels / 16; other data after ``data.scale``, which
    ``lvmkit.data.prepare_like(x, run.data())`` applies), and returns codes of shape (N,
    latent_dim). These are posterior means, not sampled codes. Values outside the training range
    (outside [0, 1] under a bounded scaling) are counted in a warning and kept.
    """

    def __init__(self, run=None, checkpoint: str = "best", batch_size: int = 512, device: str = "cpu",
                 warn_out_of_range: bool = True) -> None:
        self.run = run
        self.checkpoint = checkpoint
        self.batch_size = batch_size
        self.device = device
        self.warn_out_of_range = warn_out_of_range

    def fit(self, X=None, y=None) -> "LatentEncoder":
        run = self.run if isinstance(self.run, Run) else Run.open(Path(self.run))
        model = run.load_model(self.checkpoint, self.device)
        require(model, Encoder, "LatentEncoder")
        self.model_ = model
        self.n_features_out_ = self.model_.latent_dim
        # A bounded scaling maps the training data into [0, 1]; other scalings give no range to check.
        self.bounded_ = run.scaler().bounded if self.warn_out_of_range else False
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
        outside = int(np.count_nonzero((x < 0.0) | (x > 1.0))) if self.bounded_ else 0
        if outside:
            warnings.warn(f"{outside} of {x.size} values passed to LatentEncoder lie outside the training data's range "
                          "([0, 1] after data.scale); they are kept as they are. LatentEncoder takes data in the model's "
                          "units: scale raw data as the run's were (lvmkit's digits are scikit-learn's pixels / 16; "
                          "lvmkit.data.prepare_like(x, run.data()) applies a run's data.scale).", LvmkitWarning, stacklevel=3)
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
