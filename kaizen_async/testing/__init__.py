"""Testing helpers for code built on kaizen_async.

:class:`StandInLLMServer` is a real HTTP/1.1 server on 127.0.0.1 that answers like Ollama
(NDJSON) or an OpenAI-compatible server (SSE) from scripted replies, so provider code is
tested over real sockets with exact control of timing, chunk boundaries and failures.
"""

from __future__ import annotations

from ._llm_server import (
    BodyReply,
    Chunking,
    ErrorReply,
    Exchange,
    HangupReply,
    OllamaReply,
    OpenAIReply,
    RawReply,
    RecordedRequest,
    Reply,
    StandInLLMServer,
)

__all__ = [
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
]
