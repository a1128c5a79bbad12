"""Domain errors of the LESS library. The service maps them to HTTP codes in one place."""

from __future__ import annotations


class LessError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(LessError, ValueError):
    """A configuration value that cannot work (bad rank, unknown projector kind, ...)."""


class DataError(LessError, ValueError):
    """Bad input data: malformed JSONL, duplicate ids, empty responses, ..."""


class CheckpointNotFoundError(LessError, KeyError):
    """A checkpoint name that the datastore or checkpoint directory does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class IndexNotFoundError(LessError, FileNotFoundError):
    """No datastore (or no published version of it) at the given location."""


class IndexMismatchError(LessError):
    """Query-side settings (projector, model, LoRA layout) differ from the datastore's."""


class IntegrityError(LessError):
    """Stored bytes do not match their checksums or recomputed features."""
