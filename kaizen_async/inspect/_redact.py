"""Hiding model text: what ``show_llm_content=False`` does to an entry before it is shown.

Bodies of model messages and responses (and the user's input to a planner, and a failed
plan's raw model output) become ``{"hidden": true, "length": N, "sha256": H}``: the same
text always gives the same digest, so two runs can still be compared, but no text is sent.
Model, token counts, duration, status and error stay.
"""

from __future__ import annotations

from typing import Any

from .._canonical import decode, encode, sha256_hex
from .._trajectory import CONTENT, ENTRY_TYPE, EntryType, Record

__all__ = ["hidden", "is_hidden", "redact_content", "redact_record"]

_LLM = EntryType.LLM_EXCHANGE.value
_PLAN_CREATED = EntryType.PLAN_CREATED.value
_PLAN_FAILED = EntryType.PLAN_FAILED.value
_USER_INPUT = EntryType.USER_INPUT.value
#: request fields that are settings, not text written to or by the model
_REQUEST_SETTINGS = frozenset({"model", "options", "format", "stream", "keep_alive"})
#: message fields kept as they are (who spoke); everything else in a message is a body
_MESSAGE_KEPT = frozenset({"role"})
#: entry types whose content may carry model or user text
REDACTED_TYPES = frozenset({_LLM, _PLAN_CREATED, _PLAN_FAILED, _USER_INPUT})


def hidden(value: Any) -> dict[str, Any]:
    """A body replaced by its length (characters for text, bytes of canonical JSON
    otherwise) and the SHA-256 of its UTF-8 (or canonical JSON) bytes."""
    if isinstance(value, str):
        data = value.encode()
        return {"hidden": True, "length": len(value), "sha256": sha256_hex(data)}
    data = encode(value)
    return {"hidden": True, "length": len(data), "sha256": sha256_hex(data)}


def is_hidden(value: Any) -> bool:
    return isinstance(value, dict) and value.get("hidden") is True and "sha256" in value


def _message(message: Any) -> Any:
    if not isinstance(message, dict):
        return hidden(message)
    return {
        key: value if key in _MESSAGE_KEPT or value is None else hidden(value)
        for key, value in message.items()
    }


def _request(request: Any) -> Any:
    if not isinstance(request, dict):
        return None if request is None else hidden(request)
    out: dict[str, Any] = {}
    for key, value in request.items():
        if key == "messages" and isinstance(value, list):
            out[key] = [_message(m) for m in value]
        elif key in _REQUEST_SETTINGS or value is None:
            out[key] = value
        else:
            out[key] = hidden(value)
    return out


def redact_content(entry_type: str, content: Any) -> Any:
    """``content`` of an entry of ``entry_type`` with its model and user text hidden."""
    if not isinstance(content, dict):
        return hidden(content) if entry_type in REDACTED_TYPES and content is not None else content
    if entry_type == _LLM:
        out = dict(content)
        out["request"] = _request(content.get("request"))
        if content.get("response") is not None:
            out["response"] = hidden(content["response"])
        return out
    if entry_type in (_PLAN_CREATED, _PLAN_FAILED):
        out = dict(content)
        for key in ("user_input", "raw_response"):
            if out.get(key) is not None:
                out[key] = hidden(out[key])
        return out
    if entry_type == _USER_INPUT:
        return {key: value if value is None else hidden(value) for key, value in content.items()}
    return content


def redact_record(record: Record) -> Record:
    """The record with its content's model text hidden (hashes kept as recorded, so the
    chain shown is the real one; the content shown no longer matches it)."""
    if record[ENTRY_TYPE] not in REDACTED_TYPES:
        return record
    content = redact_content(record[ENTRY_TYPE], decode(record[CONTENT]))
    return (*record[:4], encode(content), *record[5:])
