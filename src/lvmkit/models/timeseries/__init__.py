"""Irregularly sampled time series: latent ODEs, an RNN baseline and neural ODE regression.

The packed layout
-----------------
A split of N series is one float tensor x of shape (N, T, 1 + 2D), T the longest series and
D the number of features; row r of series n is one time::

    x[n, r, 0]            time (normalised; see Dataset.info["time_offset"/"time_scale"])
    x[n, r, 1 : 1 + D]    values (0 where absent), scaled by the data set's scaler
    x[n, r, 1 + D :]      a code per value: 1 observed, 2 held out, 0 absent

* Observed values (1) are what a model reads and is trained on.
* Held-out values (2) are targets: never read by a model, never in the training loss, scored
  by ``lvmkit evaluate``: at times after the series' last observed time they count as
  extrapolation, otherwise as interpolation. A forecast asks for predictions at held-out rows
  whose values are unknown.
* Absent values (0) are missing features of a row, and padding: a series shorter than T is
  followed by rows that repeat its last time with every code 0. Times never decrease along a
  row; within a series (before its padding) they strictly increase.

The codes sit in the mask channels so the layout keeps the shape (T, 1 + 2D) and
:func:`lvmkit.data.batches` works unchanged; never multiply by the codes directly, compare
them with :data:`OBSERVED` / :data:`HELD_OUT`. A series' own clock starts at its first row
(its *origin*): the latent ODE's z0 lives there. Labels (``Split.y``), where a source has
them, are per series (the spirals' direction). ``load_data`` treats 3-D arrays as images and
adds a channel axis, so today a data set's ``shape`` is (1, T, 1 + 2D); the models accept both.

Values are in the units the model sees: ``load_data`` applies the data set's scaler
(``Dataset.scaler``; the CSV reader standardises each feature, the simulators keep their O(1)
values). Evaluation (``evaluate_split(..., scaler=)``), forecasts and figures map predictions
back to the data's units with :func:`feature_units`.

Build packed arrays with :func:`pack` (it raises :class:`~lvmkit.DataError` for times that do
not increase, NaN values without a mask, or a series with fewer than two observed times) and
read them back with :func:`unpack`.

Results never depend on which series share a batch: every series is solved on its own time
grid with its own step sizes (:class:`lvmkit.ode.ODESolver`), and every loss term is
computed per series before the batch mean.
"""
from lvmkit.models.timeseries.config import LatentODEConfig, NeuralODEConfig, RNNConfig
from lvmkit.data.packing import ABSENT, HELD_OUT, OBSERVED, channels, compact, feature_units, pack, series_shape, unpack
from lvmkit.models.timeseries.parts import RECOGNITIONS, VECTOR_FIELDS, GRURecognition, HeldOutErrors, LinearField, MLPField, ODERNNRecognition, SumField
from lvmkit.models.timeseries.latent_ode import LatentODE, build_latent_ode
from lvmkit.models.timeseries.rnn import GRUForecaster, build_rnn
from lvmkit.models.timeseries.neural_ode import NeuralODERegression, build_neural_ode

__all__ = [
    "ABSENT", "HELD_OUT", "OBSERVED", "RECOGNITIONS", "VECTOR_FIELDS", "GRUForecaster", "GRURecognition", "HeldOutErrors",
    "LatentODE", "LinearField", "MLPField", "NeuralODERegression", "ODERNNRecognition", "SumField", "build_latent_ode",
    "build_neural_ode", "build_rnn", "channels", "compact", "feature_units", "pack",
    "series_shape", "unpack",
]
