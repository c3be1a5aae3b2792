"""Exceptions with messages that name the fix.

Every error a user can cause derives from :class:`PractiseError`, so the CLI can print the message
without a traceback and exit with status 2, while genuine bugs still surface as tracebacks.
"""

from __future__ import annotations


class PractiseError(Exception):
    """Base class for user-facing errors (bad input, unreachable targets, failed checks)."""


class ConfigError(PractiseError, ValueError):
    """A strategy, config entry or option is unknown or has an invalid value."""


class DataError(PractiseError, ValueError):
    """An image folder or dataset is missing, empty, corrupt or of the wrong shape."""


class ModelError(PractiseError, ValueError):
    """A model spec cannot be resolved, or the model lacks what the strategy needs."""


class TargetError(PractiseError, ValueError):
    """A latency or size target cannot be met; the message says what is reachable."""


class TrainingError(PractiseError, RuntimeError):
    """Training diverged (NaN/inf loss) or could not resume from a checkpoint."""


class ExportError(PractiseError, RuntimeError):
    """An exported model failed its check against the torch model, or could not be written."""
