"""Exceptions users may catch.

Every error lvmkit raises for bad input is a :class:`LvmkitError` whose message is one
sentence: what was wrong, what was given, what to do. The CLI prints it on one line and exits
with status 2. All subclass :class:`ValueError` so generic handlers still work.
"""


class LvmkitError(ValueError):
    """Base class of lvmkit's user-facing errors."""


class ConfigError(LvmkitError):
    """An experiment configuration is invalid (unknown key, wrong type, impossible value)."""


class DataError(LvmkitError):
    """A data set is missing, malformed, or holds values a model cannot use."""


class CheckpointError(LvmkitError):
    """A run directory or checkpoint is missing, truncated or corrupted."""


class TrainingDiverged(LvmkitError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class LvmkitWarning(UserWarning):
    """A request lvmkit carried out, but whose result may not mean what was asked (the CLI prints
    it as one line on stderr and carries on)."""
