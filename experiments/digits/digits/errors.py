"""Errors the training entry reports in the failure file with a clear message."""


class TrainingError(Exception):
    """An expected failure: the job ends with ``<ClassName>: <message>`` in the failure file."""


class HyperparameterError(TrainingError):
    """A hyperparameter is unknown or has a bad value."""


class DataError(TrainingError):
    """A channel is missing, empty or malformed."""


class CheckpointError(TrainingError):
    """A checkpoint cannot be used to resume this job."""
