"""The public surface is pinned: a change to it is a deliberate, visible diff."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import kaizen_async
import kaizen_async.inspect
import kaizen_async.llm
import kaizen_async.signing
import kaizen_async.stores
import kaizen_async.sync
import kaizen_async.testing
from kaizen_async import ErrorCode, KaizenError

PUBLIC = {
    kaizen_async: [
        "Agent",
        "AgentInfo",
        "AgentProtocol",
        "ArtifactNotFoundError",
        "ArtifactTooLargeError",
        "CapabilityCall",
        "CapabilitySpec",
        "DispatchError",
        "DispatchResult",
        "Dispatcher",
        "EntryType",
        "HubStatistics",
        "ErrorCode",
        "InvokeResult",
        "KaizenError",
        "KaizenNotFoundError",
        "KaizenTypeError",
        "KaizenValidationError",
        "LLMError",
        "MailboxStatistics",
        "PersistError",
        "PersistFileNotFoundError",
        "PlanResult",
        "PlanStream",
        "Planner",
        "SCHEMA_VERSION",
        "SchemaMismatchError",
        "Session",
        "SessionClosedError",
        "SessionCorruptedError",
        "SessionBusyError",
        "SessionExistsError",
        "SessionFencedError",
        "SessionHub",
        "SessionInUseError",
        "SessionLease",
        "SessionNotFoundError",
        "SessionReadOnlyError",
        "SessionStatistics",
        "StateKeyNotFoundError",
        "TrajectoryEntry",
        "Transaction",
        "__version__",
        "capability",
    ],
    kaizen_async.llm: [
        "LLMChunk",
        "LLMError",
        "LLMProvider",
        "LLMResponse",
        "Message",
        "OllamaProvider",
        "OpenAICompatProvider",
        "ReplayProvider",
        "ScriptedProvider",
    ],
    kaizen_async.testing: [
        "BodyReply",
        "Chunking",
        "ErrorReply",
        "Exchange",
        "HangupReply",
        "OllamaReply",
        "OpenAIReply",
        "RawReply",
        "RecordedRequest",
        "Reply",
        "StandInLLMServer",
    ],
    kaizen_async.sync: ["Dispatcher", "Session"],
    kaizen_async.inspect: ["create_app"],
    kaizen_async.stores: [
        "Batch",
        "CheckpointStore",
        "MemoryStore",
        "PostgresStore",
        "SQLiteStore",
        "SessionInfo",
        "SessionStore",
        "StoreStatistics",
        "StoredSession",
        "verify_stored",
    ],
    kaizen_async.signing: [
        "ENV_KEY_FILE",
        "ENV_KEY_PASSPHRASE",
        "AnchorPublisher",
        "AnchorSink",
        "Checkpoint",
        "CheckpointPolicy",
        "Ed25519Signer",
        "JsonlAnchor",
        "Keyring",
        "Signer",
        "TrustedKey",
        "VerifyReport",
        "checkpoint_text",
        "key_id_of",
        "read_anchors",
    ],
}


@pytest.mark.parametrize("module", list(PUBLIC), ids=lambda m: m.__name__)
def test_all_is_pinned_and_importable(module: ModuleType) -> None:
    assert sorted(module.__all__) == sorted(PUBLIC[module])
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_every_error_is_a_kaizen_error_with_a_code() -> None:
    errors = [
        obj
        for obj in vars(kaizen_async).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    ]
    assert len(errors) >= 12
    for error in errors:
        assert issubclass(error, KaizenError)
        assert isinstance(error.default_code, ErrorCode)
    assert issubclass(kaizen_async.KaizenValidationError, ValueError)
    assert issubclass(kaizen_async.KaizenNotFoundError, KeyError)
    assert issubclass(kaizen_async.KaizenTypeError, TypeError)
    assert issubclass(kaizen_async.PersistFileNotFoundError, kaizen_async.PersistError)
    assert issubclass(kaizen_async.PersistFileNotFoundError, FileNotFoundError)
    # a malformed capability call is bad input like any other
    assert issubclass(kaizen_async.DispatchError, kaizen_async.KaizenValidationError)


def test_original_vocabulary_is_kept() -> None:
    original_types = {
        "agent_invoked",
        "agent_completed",
        "agent_failed",
        "state_set",
        "state_deleted",
        "artifact_written",
        "artifact_deleted",
        "session_created",
        "session_loaded",
        "session_saved",
        "plan_created",
        "plan_step_started",
        "plan_step_completed",
        "user_input",
        "system_note",
    }
    assert original_types <= {t.value for t in kaizen_async.EntryType}
    assert {"session_forked", "llm_exchange"} <= {t.value for t in kaizen_async.EntryType}
    original_codes = {  # all 22 of src/kaizen/types.py
        "session_invalid_state",
        "agent_not_found",
        "agent_timeout",
        "dispatch_sequence_failed",
        "persist_save_failed",
        "persist_load_failed",
        "persist_file_not_found",
        "persist_schema_mismatch",
        "artifact_not_found",
        "artifact_too_large",
        "artifact_invalid_name",
        "agent_capability_not_found",
        "agent_invalid_params",
        "agent_invocation_failed",
        "dispatch_no_agent_for_capability",
        "plan_generation_failed",
        "plan_invalid_format",
        "plan_llm_error",
        "session_not_found",
        "session_corrupted",
        "validation_error",
        "unknown_error",
    }
    assert original_codes <= {c.value for c in ErrorCode}


def test_checkpoint_codes_are_session_corrupted_codes() -> None:
    codes = {
        "checkpoint_invalid",
        "checkpoint_head_mismatch",
        "unknown_key",
        "unsigned_tail",
        "rollback_detected",
    }
    assert codes <= {c.value for c in ErrorCode}
    error = kaizen_async.SessionCorruptedError("x", seq=3, code=ErrorCode.UNKNOWN_KEY)
    assert error.code is ErrorCode.UNKNOWN_KEY and error.seq == 3
    assert kaizen_async.SessionCorruptedError("x").code is ErrorCode.SESSION_CORRUPTED
