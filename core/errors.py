"""Errors that reach users. `core` raises these; the CLI, the pages and the API map them outward."""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class: the message is written for the person who has to act on it."""


class InputFileError(WorkbenchError, ValueError):
    """A file could not be read as a review table (binary, bad encoding, truncated, empty, ...)."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class SchemaError(WorkbenchError, ValueError):
    """The columns do not fit what is needed (no text column, unknown mapping target, ...)."""


class ParameterError(WorkbenchError, ValueError):
    """A parameter is outside its valid range; the message says what was expected and what came."""


class NotFittedError(WorkbenchError, ValueError, AttributeError):
    """A component was used before `fit`."""


class StorageError(WorkbenchError, OSError):
    """The object store or local storage failed; the message names the endpoint and bucket or path."""


class NotFoundError(WorkbenchError, KeyError):
    """A named batch, model version or run does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelUnavailableError(WorkbenchError, RuntimeError):
    """No trained model is available to score with."""


class WeightsError(ModelUnavailableError):
    """Embedding weights are not the expected ones: a model file differs from its known SHA-256 or is missing,
    or a trained model recorded other weights than the installed ones. The message names the file or both
    digests on one line."""
