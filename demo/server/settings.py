"""The demo server's settings, from arguments or the environment."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """What the server needs to know.

    Attributes:
        database: the SQLite file holding the sessions (created when missing).
        model: an Ollama model name: plans come from Ollama (``OLLAMA_HOST``, or
            ``ollama_url``). None: from the scripted stand-in model (see
            :func:`demo.server.planning.keyword_plan`), so the demo runs without a model.
        ollama_url: Ollama's base URL; None reads ``OLLAMA_HOST`` (default localhost:11434).
        chunk_delay: seconds the scripted model waits between 8-character chunks of its
            reply, so a plan streams visibly (0 for none).
        heartbeat: seconds between keep-alive comments on an idle event stream.
        max_body: largest request body accepted, in bytes.
    """

    database: str = "sessions.db"
    model: str | None = None
    ollama_url: str | None = None
    chunk_delay: float = 0.01
    heartbeat: float = 15.0
    max_body: int = 1 << 20

    def __post_init__(self) -> None:
        if not isinstance(self.database, str) or not self.database:
            raise ValueError("database must be a non-empty path")
        for name in ("chunk_delay", "heartbeat"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.heartbeat == 0:
            raise ValueError("heartbeat must be > 0")
        if not isinstance(self.max_body, int) or self.max_body < 1:
            raise ValueError(f"max_body must be an int >= 1, got {self.max_body!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``KAIZEN_DEMO_DB``, ``KAIZEN_DEMO_MODEL``, ``OLLAMA_HOST`` and
        ``KAIZEN_DEMO_CHUNK_DELAY``; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        defaults = cls()
        delay = env.get("KAIZEN_DEMO_CHUNK_DELAY")
        return cls(
            database=env.get("KAIZEN_DEMO_DB") or defaults.database,
            model=env.get("KAIZEN_DEMO_MODEL") or None,
            ollama_url=env.get("OLLAMA_HOST") or None,
            chunk_delay=defaults.chunk_delay if not delay else float(delay),
        )
