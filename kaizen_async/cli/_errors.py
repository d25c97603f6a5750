"""The command line's exit codes, and how each failure maps to one (with a one-line message).

The library raises typed :class:`~kaizen_async.KaizenError` values; this module turns them,
and the operating system's errors, into ``kaizen: <what went wrong>`` and an exit code, so a
user never sees a traceback for bad input. Only a bug (an error nobody expected) prints one.
"""

from __future__ import annotations

import sqlite3

import click

from .._exceptions import (
    KaizenError,
    KaizenNotFoundError,
    KaizenValidationError,
    PersistError,
    SchemaMismatchError,
    SessionCorruptedError,
)

__all__ = [
    "BAD_INPUT",
    "DIFFERENT",
    "EXIT_CODES_HELP",
    "INTERNAL",
    "INTERRUPTED",
    "IO_ERROR",
    "OK",
    "UNAVAILABLE",
    "BadInput",
    "CliError",
    "IOFailure",
    "Unavailable",
    "describe",
]

OK = 0
#: the answer is "no": verification failed, the sessions differ, a replay differs
DIFFERENT = 1
BAD_INPUT = 2
IO_ERROR = 3
UNAVAILABLE = 4
INTERNAL = 70
INTERRUPTED = 130

EXIT_CODES_HELP = f"""\b
Exit codes:
  {OK}    ok (verified, the same)
  {DIFFERENT}    verification failed, or the sessions / the replay differ
  {BAD_INPUT}    bad usage or bad input: a missing or corrupt file, an unknown id, a bad URL
  {IO_ERROR}    an I/O error: a file or store that cannot be read or written
  {UNAVAILABLE}    not available here: the demo is not installed, a store kind not supported yet
  {INTERNAL}   internal error (a bug: the traceback is printed)
  {INTERRUPTED}  interrupted (Ctrl-C)"""


class CliError(click.ClickException):
    """A failure the command line reports as one line and an exit code."""

    exit_code = BAD_INPUT

    def format_message(self) -> str:
        return self.message


class BadInput(CliError):
    """The arguments name something that does not exist or cannot be used."""

    exit_code = BAD_INPUT


class IOFailure(CliError):
    """A file or store could not be read or written."""

    exit_code = IO_ERROR


class Unavailable(CliError):
    """Something this install cannot do (yet)."""

    exit_code = UNAVAILABLE


def describe(exc: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code for an expected failure; None for a bug."""
    if isinstance(exc, CliError):
        return exc.format_message(), exc.exit_code
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename or exc}", BAD_INPUT
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename or exc} is a directory, not a file", BAD_INPUT
    if isinstance(exc, SessionCorruptedError):
        where = f" (first bad entry: seq {exc.seq})" if exc.seq is not None else ""
        return f"corrupt session: {exc.message}{where}", BAD_INPUT
    if isinstance(exc, SchemaMismatchError):
        return exc.message, BAD_INPUT
    if isinstance(exc, PersistError):
        return exc.message, IO_ERROR
    if isinstance(exc, KaizenNotFoundError | KaizenValidationError):
        return exc.message, BAD_INPUT
    if isinstance(exc, KaizenError):
        return str(exc), BAD_INPUT
    if isinstance(exc, OSError):
        target = f"{exc.filename}: " if exc.filename else ""
        return f"{target}{exc.strerror or exc}", IO_ERROR
    if isinstance(exc, sqlite3.Error):
        return f"database error: {exc}", IO_ERROR
    return None
