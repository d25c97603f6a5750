"""Where the demo's plans come from: Ollama when a model is configured, else a scripted
stand-in model that plans the capabilities a request names."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import orjson

from kaizen_async.llm import LLMProvider, OllamaProvider, ScriptedProvider

from .settings import Settings

#: words of a request the stand-in model understands, and the capability each names
WORDS = {
    "reverse": "reverse",
    "reversed": "reverse",
    "backwards": "reverse",
    "uppercase": "uppercase",
    "upper": "uppercase",
    "shout": "uppercase",
    "capitalize": "uppercase",
}

#: ``models(request)``: a provider to plan ``request`` with, entered for that one plan
Models = Callable[[str], AbstractAsyncContextManager[LLMProvider]]


def keyword_plan(request: str, key: str = "text") -> str:
    """The stand-in model's reply to ``request``: a plan calling, in the order the request
    names them, the capabilities of :data:`WORDS` on the state key ``key``.

    ``"reverse the text, then shout it"`` plans reverse then uppercase; a request naming
    none of them gets the empty plan ``{"steps": []}``.
    """
    steps = [
        {"capability": WORDS[word], "params": {"key": key}}
        for word in re.findall(r"[a-z]+", request.lower())
        if word in WORDS
    ]
    return orjson.dumps({"steps": steps}).decode()


@contextlib.asynccontextmanager
async def plan_models(settings: Settings) -> AsyncIterator[Models]:
    """The server's models for its lifetime: one Ollama client shared by every plan (closed
    on exit), or a fresh scripted stand-in per plan."""
    if settings.model is not None:
        async with OllamaProvider(settings.model, settings.ollama_url) as ollama:

            @contextlib.asynccontextmanager
            async def shared(request: str) -> AsyncIterator[LLMProvider]:
                yield ollama

            yield shared
        return

    def scripted(request: str) -> ScriptedProvider:
        return ScriptedProvider(keyword_plan(request), delay_per_chunk=settings.chunk_delay)

    yield scripted
