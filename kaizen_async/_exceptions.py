"""The one exception hierarchy of kaizen_async.

Every error the library raises on purpose is a :class:`KaizenError` carrying an
:class:`ErrorCode`. Where a builtin already names the kind of mistake, the error also
subclasses it, so ``except ValueError`` / ``except KeyError`` keep working::

    KaizenError
    ├── SessionClosedError           session is not running (closed or never started)
    ├── SessionReadOnlyError         a write to a session opened read-only
    ├── SessionExistsError           (ValueError) creating a session whose id is taken
    ├── SessionInUseError            deleting a session that someone holds open
    ├── SessionCorruptedError        a file or trajectory fails verification (names the seq)
    ├── SchemaMismatchError          a file written by a newer schema
    ├── SessionBusyError             opening a session whose lease another live hub holds
    ├── PersistError                 a save could not be written (OSError underneath)
    │   ├── PersistFileNotFoundError (FileNotFoundError) loading a file that does not exist
    │   └── SessionFencedError       a write of a hub that lost the session to another hub
    ├── KaizenValidationError        (ValueError) bad key, non-JSON value, bad name ...
    │   ├── ArtifactTooLargeError    data over the session's artifact size limit
    │   └── DispatchError            a capability call that cannot be routed or formed
    ├── KaizenTypeError              (TypeError) e.g. artifact data that is not bytes
    ├── KaizenNotFoundError          (KeyError) missing state key or artifact
    │   ├── StateKeyNotFoundError
    │   ├── ArtifactNotFoundError
    │   └── SessionNotFoundError     no session with that id in the store
    └── LLMError                     any failure talking to a model (provider, status)
"""

from __future__ import annotations

import errno
import os
from enum import Enum
from typing import Any

__all__ = [
    "ArtifactNotFoundError",
    "ArtifactTooLargeError",
    "DispatchError",
    "ErrorCode",
    "KaizenError",
    "KaizenNotFoundError",
    "KaizenTypeError",
    "KaizenValidationError",
    "LLMError",
    "PersistError",
    "PersistFileNotFoundError",
    "SchemaMismatchError",
    "SessionBusyError",
    "SessionClosedError",
    "SessionCorruptedError",
    "SessionExistsError",
    "SessionFencedError",
    "SessionInUseError",
    "SessionNotFoundError",
    "SessionReadOnlyError",
    "StateKeyNotFoundError",
]


class ErrorCode(str, Enum):
    """Machine-readable error codes; the original Kaizen's codes plus what this design adds."""

    # session
    SESSION_NOT_FOUND = "session_not_found"
    SESSION_CORRUPTED = "session_corrupted"
    SESSION_INVALID_STATE = "session_invalid_state"
    SESSION_CLOSED = "session_closed"
    SESSION_SCHEMA_MISMATCH = "session_schema_mismatch"
    SESSION_EXISTS = "session_exists"
    SESSION_BUSY = "session_busy"
    SESSION_FENCED = "session_fenced"
    SESSION_READ_ONLY = "session_read_only"
    SESSION_IN_USE = "session_in_use"
    # signed checkpoints (tamper evidence)
    CHECKPOINT_INVALID = "checkpoint_invalid"
    CHECKPOINT_HEAD_MISMATCH = "checkpoint_head_mismatch"
    UNKNOWN_KEY = "unknown_key"
    UNSIGNED_TAIL = "unsigned_tail"
    ROLLBACK_DETECTED = "rollback_detected"
    STATE_KEY_NOT_FOUND = "state_key_not_found"
    # agents
    AGENT_NOT_FOUND = "agent_not_found"
    AGENT_CAPABILITY_NOT_FOUND = "agent_capability_not_found"
    AGENT_INVALID_PARAMS = "agent_invalid_params"
    AGENT_INVOCATION_FAILED = "agent_invocation_failed"
    AGENT_INVALID_RESULT = "agent_invalid_result"
    AGENT_TIMEOUT = "agent_timeout"
    AGENT_CANCELLED = "agent_cancelled"
    AGENT_MAILBOX_FULL = "agent_mailbox_full"
    # dispatch
    DISPATCH_NO_AGENT_FOR_CAPABILITY = "dispatch_no_agent_for_capability"
    DISPATCH_INVALID_CALL = "dispatch_invalid_call"
    DISPATCH_SEQUENCE_FAILED = "dispatch_sequence_failed"
    STEP_INTERRUPTED = "step_interrupted"
    # planning
    PLAN_GENERATION_FAILED = "plan_generation_failed"
    PLAN_INVALID_FORMAT = "plan_invalid_format"
    PLAN_LLM_ERROR = "plan_llm_error"
    PLAN_TRUNCATED = "plan_truncated"
    # persistence
    PERSIST_SAVE_FAILED = "persist_save_failed"
    PERSIST_LOAD_FAILED = "persist_load_failed"
    PERSIST_FILE_NOT_FOUND = "persist_file_not_found"
    PERSIST_SCHEMA_MISMATCH = "persist_schema_mismatch"
    PERSIST_CONFLICT = "persist_conflict"
    PERSIST_COMMIT_FAILED = "persist_commit_failed"
    # artifacts
    ARTIFACT_NOT_FOUND = "artifact_not_found"
    ARTIFACT_TOO_LARGE = "artifact_too_large"
    ARTIFACT_INVALID_NAME = "artifact_invalid_name"
    # llm
    LLM_ERROR = "llm_error"
    # generic
    VALIDATION_ERROR = "validation_error"
    UNKNOWN_ERROR = "unknown_error"

    def __str__(self) -> str:
        return self.value


class KaizenError(Exception):
    """Base of every error kaizen_async raises on purpose.

    Attributes:
        code: the :class:`ErrorCode` of this error.
        details: extra, JSON-friendly context.
    """

    default_code: ErrorCode = ErrorCode.UNKNOWN_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: ErrorCode = code if code is not None else self.default_code
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message


class SessionClosedError(KaizenError):
    """The session (or dispatcher) is not running: it was closed or never entered."""

    default_code = ErrorCode.SESSION_CLOSED


class SessionReadOnlyError(KaizenError):
    """A write to a session opened for reading only (``Session.load(path, read_only=True)``)."""

    default_code = ErrorCode.SESSION_READ_ONLY


class SessionExistsError(KaizenError, ValueError):
    """Creating a session under an id that a store already holds."""

    default_code = ErrorCode.SESSION_EXISTS


class SessionInUseError(KaizenError):
    """An operation that needs a session nobody holds (``SessionHub.delete_session``) on a
    session that is leased."""

    default_code = ErrorCode.SESSION_IN_USE


class SessionCorruptedError(KaizenError):
    """A trajectory or file failed verification.

    ``code`` is ``session_corrupted`` for a broken chain or state, or, for signed
    checkpoints, ``checkpoint_invalid``, ``checkpoint_head_mismatch``, ``unknown_key``,
    ``unsigned_tail`` or ``rollback_detected``.

    Attributes:
        seq: the first bad entry's seq, when the problem is tied to one entry.
    """

    default_code = ErrorCode.SESSION_CORRUPTED

    def __init__(
        self,
        message: str,
        *,
        seq: int | None = None,
        details: dict[str, Any] | None = None,
        code: ErrorCode | None = None,
    ) -> None:
        super().__init__(message, details=details, code=code)
        self.seq = seq


class SchemaMismatchError(KaizenError):
    """A file was written by a schema version this library does not read."""

    default_code = ErrorCode.SESSION_SCHEMA_MISMATCH


class PersistError(KaizenError):
    """A save or a store commit could not be written.

    A failed save leaves the previous file and the session unchanged; a failed commit is
    not acknowledged (its callers get this error). ``code`` says which:
    ``persist_save_failed``, ``persist_commit_failed``, ``persist_conflict`` (the file or
    store holds a history this session does not continue), ``persist_file_not_found``.
    """

    default_code = ErrorCode.PERSIST_SAVE_FAILED


class PersistFileNotFoundError(PersistError, FileNotFoundError):
    """Loading a file that does not exist (``except FileNotFoundError`` catches it too).

    Attributes:
        filename: the path that was not found; ``errno`` is ``ENOENT``.
    """

    default_code = ErrorCode.PERSIST_FILE_NOT_FOUND

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message, details={"path": path})
        self.errno = errno.ENOENT
        self.strerror = os.strerror(errno.ENOENT)
        self.filename = path


class KaizenValidationError(KaizenError, ValueError):
    """Input that is not acceptable: a bad key, a non-JSON value, a bad name or call."""

    default_code = ErrorCode.VALIDATION_ERROR


class ArtifactTooLargeError(KaizenValidationError):
    """Artifact data is larger than the session's ``max_artifact_size``."""

    default_code = ErrorCode.ARTIFACT_TOO_LARGE


class KaizenTypeError(KaizenError, TypeError):
    """An argument of the wrong type (artifact data must be ``bytes``)."""

    default_code = ErrorCode.VALIDATION_ERROR


class KaizenNotFoundError(KaizenError, KeyError):
    """Something looked up by name does not exist."""

    default_code = ErrorCode.UNKNOWN_ERROR

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class StateKeyNotFoundError(KaizenNotFoundError):
    """A state key that is not set."""

    default_code = ErrorCode.STATE_KEY_NOT_FOUND


class ArtifactNotFoundError(KaizenNotFoundError):
    """An artifact name that is not written (or was deleted)."""

    default_code = ErrorCode.ARTIFACT_NOT_FOUND


class SessionNotFoundError(KaizenNotFoundError):
    """No session with that id in the store."""

    default_code = ErrorCode.SESSION_NOT_FOUND


class SessionBusyError(KaizenError):
    """Opening a session whose lease another live hub holds. ``details`` name the
    ``owner`` and when its lease ends (``lease_until``, seconds since the epoch): once it
    has ended the session can be taken over, or at once with ``take_over=True``."""

    default_code = ErrorCode.SESSION_BUSY


class SessionFencedError(PersistError):
    """A write of a hub that no longer owns the session: another hub took it over (a
    higher epoch). Nothing of the write is stored, and the hub's copy of the session
    closes; ``details`` name the session, the ``epoch`` the write carried and the
    current ``owner``."""

    default_code = ErrorCode.SESSION_FENCED


class DispatchError(KaizenValidationError):
    """A capability call that is malformed or cannot be formed (bad input, like every
    :class:`KaizenValidationError`; still a ``ValueError``)."""

    default_code = ErrorCode.DISPATCH_INVALID_CALL


class LLMError(KaizenError):
    """Any failure talking to a model.

    Attributes:
        provider: the provider's name (``"ollama"``, ``"openai_compat"``, ...).
        status: the HTTP status when there was one.
    """

    default_code = ErrorCode.LLM_ERROR

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.provider = provider
        self.status = status

    def __str__(self) -> str:
        return f"[{self.provider}] {self.message}"
