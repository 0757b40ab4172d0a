"""Exceptions for problems in the user's input. The CLI prints them as one line, no traceback."""


class Lenet5Error(Exception):
    """Base class: a clear, one-line message about a file or an argument."""


class DataError(Lenet5Error):
    """A dataset file is missing, unreadable or not valid IDX data."""


class CheckpointError(Lenet5Error):
    """A checkpoint file is missing, unreadable, or does not fit the model."""
