"""LLM providers: one streaming interface over Ollama, OpenAI-compatible servers, scripted
replies and replays of recorded sessions. Every failure is an :class:`LLMError`.
"""

from __future__ import annotations

from .._exceptions import LLMError
from ._base import LLMChunk, LLMProvider, LLMResponse, Message
from ._ollama import OllamaProvider
from ._openai import OpenAICompatProvider
from ._replay import ReplayProvider
from ._scripted import ScriptedProvider

__all__ = [
    "LLMChunk",
    "LLMError",
    "LLMProvider",
    "LLMResponse",
    "Message",
    "OllamaProvider",
    "OpenAICompatProvider",
    "ReplayProvider",
    "ScriptedProvider",
]
