"""The one exception type for a user's mistake.

`UserError` is raised for bad input that the user can fix (a wrong argument, path, model folder,
token id, site name...). Its message names the problem and the fix. The command line prints it as
one paragraph (`error: ...`) with a non-zero exit code; every other exception is a bug and keeps
its traceback. It subclasses ValueError so `except ValueError` in user code keeps working.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input that the user can fix; the message says what is wrong and how to fix it."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a model folder needs) is not there; also a FileNotFoundError."""


class UnknownNameError(UserError, KeyError):
    """An activation name or layer this model (or cache) does not have; also a KeyError, so Mapping lookups work."""

    def __str__(self) -> str:  # the message itself, not KeyError's quoted repr of it
        return ValueError.__str__(self)


class EmptyCircuitError(UserError):
    """A circuit search kept no edge (acdc(..., on_empty="raise")); `reason` says why, in words a caller can put in its
    own message (the command line names its --threshold option with it)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class WrongTypeError(UserError, TypeError):
    """An argument of the wrong type (e.g. a patch function that returns no tensor); also a TypeError."""
