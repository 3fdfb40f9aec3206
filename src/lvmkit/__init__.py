"""lvmkit: deep latent-variable models for scientific data.

The Python API mirrors the CLI::

    import lvmkit
    cfg = lvmkit.load_config("configs/vae_digits.toml", ["train.epochs=5"])
    run = lvmkit.train(cfg)             # a run directory
    lvmkit.evaluate(run, k=1000)        # RUN/eval.json
    lvmkit.write_report(run)            # RUN/report.html
"""
__version__ = "0.1.0"

from .checkpoint import load_checkpoint, save_checkpoint
from .config import (DataConfig, EvalConfig, ExperimentConfig, ModelConfig, TrainConfig, apply_overrides,
                     load_config, make_config)
from .corruption import CORRUPTIONS
from .data import SOURCES, Dataset, Split, load_data
from .distributions import kl_normal, kl_std_normal, log_normal, log_std_normal, logmeanexp, reparameterize
from .errors import CheckpointError, ConfigError, DataError, LvmkitError, TrainingDiverged
from .evaluate import evaluate
from .kinds import MODEL_KINDS
from .likelihoods import LIKELIHOODS
from .mmd import KERNELS, mmd2_rbf_gaussians, mmd2_unbiased
from .model import LatentVariableModel, LossOutput, build_model
from .networks import NETWORKS
from .regularizers import REGULARIZERS
from .registry import Registry
from .run import Run
from .train import resume, train
from .sampling import sample
from .anomaly import SCORES, anomaly
from .cluster import CLUSTERERS, cluster, cluster_metrics, hungarian_accuracy
from .latent import LatentEncoder
from .oneclass import one_class
from .probe import probe
from .ode import SOLVERS, ODESolver, SolverError
# Subpackages that register data sources and model families when imported.
from . import attpc  # noqa: E402  data.name = "attpc"
from . import timeseries  # noqa: E402  spirals/circle/cubic-spiral/csv; latent-ode/rnn/neural-ode
from .timeseries import forecast


def __getattr__(name: str):
    # Plotting pulls in matplotlib: import it only when asked for.
    if name == "write_report":
        from .report import write_report

        return write_report
    raise AttributeError(f"module 'lvmkit' has no attribute {name!r}")


__all__ = [
    "attpc", "timeseries", "forecast", "SOLVERS", "ODESolver", "SolverError", "SCORES", "anomaly", "one_class", "CLUSTERERS", "LatentEncoder", "cluster", "cluster_metrics", "hungarian_accuracy", "probe",
    "CORRUPTIONS", "KERNELS", "LIKELIHOODS", "MODEL_KINDS", "NETWORKS", "REGULARIZERS", "SOURCES",
    "CheckpointError", "ConfigError", "DataConfig", "DataError", "Dataset", "EvalConfig", "ExperimentConfig",
    "LatentVariableModel", "LossOutput", "LvmkitError", "ModelConfig", "Registry", "Run", "Split", "TrainConfig",
    "TrainingDiverged", "apply_overrides", "build_model", "evaluate", "kl_normal", "kl_std_normal", "load_checkpoint",
    "load_config", "load_data", "log_normal", "log_std_normal", "logmeanexp", "make_config", "mmd2_rbf_gaussians",
    "mmd2_unbiased", "reparameterize", "resume", "sample", "save_checkpoint", "train", "write_report", "__version__",
]
