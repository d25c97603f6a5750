"""Built-in agents: small, deterministic string transforms over session state."""

from __future__ import annotations

from ._text import KeyParams as KeyParams
from ._text import ReverseAgent as ReverseAgent
from ._text import UppercaseAgent as UppercaseAgent

__all__ = ["KeyParams", "ReverseAgent", "UppercaseAgent"]
