"""A run directory: the resolved config, metrics log, checkpoints, figures and reports of one
training run, and the model and data it was trained on, loaded back."""
from lvmkit.runs.run import Run

__all__ = ["Run"]
