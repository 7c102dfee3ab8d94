"""Exceptions raised by the data pipeline.  Every message names what went wrong and where."""


class DataError(Exception):
    """A data source is missing, empty, malformed or inconsistent (a user error)."""


class BadImageError(DataError):
    """One image could not be decoded (corrupt, truncated, unreadable)."""

    def __init__(self, path, reason):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = str(path)
        self.reason = str(reason)


class WorkerError(DataError):
    """A loader worker process died or failed."""
