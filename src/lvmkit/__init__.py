"""lvmkit: deep latent-variable models for scientific data.

The Python API mirrors the CLI::

    import lvmkit
    cfg = lvmkit.load_config("configs/vae_digits.toml", ["train.epochs=5"])
    run = lvmkit.train(cfg)             # a run directory
    lvmkit.evaluate(run, k=1000)        # RUN/eval.json
    lvmkit.write_report(run)            # RUN/report.html
    lvmkit.run_search("configs/search/digits_convae.toml", trials=3, out="searches/s")
    lvmkit.repeat("searches/s/best.toml", seeds=10, out="repeats/s")   # repeat.json, repeat.html
"""
from lvmkit.core._version import __version__  # noqa: E402

from lvmkit.core.checkpoint import load_checkpoint, save_checkpoint
from lvmkit.core.config import (DataConfig, EvalConfig, ExperimentConfig, ModelConfig, OptimGroupConfig, Section, TrainConfig, apply_overrides,
                     load_config, make_config)
from lvmkit.models.parts.corruption import CORRUPTIONS
from lvmkit.data import SOURCES, Dataset, Split, load_data
from lvmkit.models.parts.distributions import kl_normal, kl_std_normal, log_normal, log_std_normal, logmeanexp, reparameterize
from lvmkit.core.errors import CheckpointError, ConfigError, DataError, LvmkitError, LvmkitWarning, TrainingDiverged
from lvmkit.analysis.evaluate import evaluate
from lvmkit.core.kinds import MODEL_KINDS
from lvmkit.models.parts.likelihoods import LIKELIHOODS
from lvmkit.models.parts.mmd import KERNELS, mmd2_biased, mmd2_rbf_gaussians, mmd2_unbiased
from lvmkit.core.contract import (CAPABILITIES, FAMILIES, AbstractModel, ClusterModel, DensityModel, Encoder, EnergyModel,
                                  EvidenceBound, Family, Forecaster, Generator, IterativeGenerator, LossOutput, Reconstructor,
                                  capabilities, has)
from lvmkit.core.optim import EMA, OPTIMIZERS, Optimizers
from lvmkit.models import build_model
from lvmkit.models.autoencoder.autoencoder import Autoencoder, AutoencoderConfig
from lvmkit.models.gan.gan import GAN, GAN_LOSSES, GANConfig, gradient_penalty
from lvmkit.models.parts.networks import NETWORKS
from lvmkit.models.parts.regularizers import REGULARIZERS
from lvmkit.core.registry import Registry
from lvmkit.runs.run import Run
from lvmkit.training.train import Trainer, resume, train
from lvmkit.training.vmc import load_vmc_config, vmc, vmc_resume
from lvmkit.analysis.sampling import sample
from lvmkit.analysis.quality import frechet_distance, precision_recall, quality
from lvmkit.analysis.compare import compare
from lvmkit.analysis.anomaly import SCORES, anomaly
from lvmkit.analysis.cluster import CLUSTERERS, cluster, cluster_metrics, hungarian_accuracy
from lvmkit.analysis.latent import LatentEncoder
from lvmkit.analysis.oneclass import one_class
from lvmkit.analysis.probe import probe
from lvmkit.models.timeseries.ode import SOLVERS, ODESolver, SolverError
# Subpackages that register data sources and model families when imported.
from lvmkit.data import attpc  # noqa: E402  data.name = "attpc"
from lvmkit.data import ising  # noqa: E402  data.name = "ising"
from lvmkit.data import series as _series  # noqa: E402,F401  data.name = spirals/circle/cubic-spiral/series-csv
from lvmkit.data import table as _table  # noqa: E402,F401  data.name = "csv"
from lvmkit.models import timeseries  # noqa: E402  latent-ode/rnn/neural-ode
from lvmkit.analysis.forecast import forecast
from lvmkit.search import repeat, run_search, search_report


def __getattr__(name: str):
    # Plotting pulls in matplotlib: import it only when asked for.
    if name == "write_report":
        from lvmkit.report import write_report

        return write_report
    raise AttributeError(f"module 'lvmkit' has no attribute {name!r}")


__all__ = [
    "attpc", "timeseries", "forecast", "repeat", "run_search", "search_report", "SOLVERS", "ODESolver", "SolverError", "SCORES", "anomaly", "one_class", "CLUSTERERS", "LatentEncoder", "cluster", "cluster_metrics", "hungarian_accuracy", "probe",
    "CORRUPTIONS", "KERNELS", "LIKELIHOODS", "MODEL_KINDS", "NETWORKS", "REGULARIZERS", "SOURCES",
    "CheckpointError", "ConfigError", "DataConfig", "DataError", "Dataset", "EvalConfig", "ExperimentConfig",
    "AbstractModel", "GAN", "GAN_LOSSES", "GANConfig", "gradient_penalty", "Autoencoder", "AutoencoderConfig", "CAPABILITIES", "DensityModel", "EMA", "Encoder", "FAMILIES", "Family",
    "Forecaster", "Generator", "OPTIMIZERS", "OptimGroupConfig", "Optimizers", "Reconstructor", "Section", "Trainer",
    "capabilities", "has", "ClusterModel", "EnergyModel", "EvidenceBound", "IterativeGenerator", "compare", "frechet_distance", "precision_recall", "quality", "LossOutput", "LvmkitError", "LvmkitWarning", "ModelConfig", "Registry", "Run", "Split", "TrainConfig",
    "TrainingDiverged", "apply_overrides", "build_model", "evaluate", "kl_normal", "kl_std_normal", "load_checkpoint",
    "load_vmc_config", "vmc", "vmc_resume",
    "load_config", "load_data", "log_normal", "log_std_normal", "logmeanexp", "make_config", "mmd2_rbf_gaussians",
    "mmd2_biased", "mmd2_unbiased", "reparameterize", "resume", "sample", "save_checkpoint", "train", "write_report", "__version__",
]
