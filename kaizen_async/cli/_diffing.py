"""Comparing two sessions: where their histories part, which keys or artifacts differ."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._trajectory import HASH, Record

__all__ = ["compare_histories", "compare_maps"]

_MISSING = object()


def compare_histories(a: Sequence[Record], b: Sequence[Record]) -> dict[str, Any]:
    """Where two histories part: how many leading entries they share (equal hashes; the
    chain makes an equal hash at seq k mean equal entries 1..k) and what that makes them."""
    shared = 0
    for left, right in zip(a, b, strict=False):
        if left[HASH] != right[HASH]:
            break
        shared += 1
    if shared == len(a) == len(b):
        relation = "same"
    elif shared == 0:
        relation = "unrelated"
    elif shared == len(a):
        relation = "b_continues_a"
    elif shared == len(b):
        relation = "a_continues_b"
    else:
        relation = "diverged"
    diverged = None if relation == "same" or shared in (len(a), len(b)) else shared + 1
    return {
        "relation": relation,
        "common_prefix": shared,
        "diverged_at_seq": diverged,
        "a_entries": len(a),
        "b_entries": len(b),
    }


def compare_maps(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Per key that differs: ``{"key", "a", "b", "in_a", "in_b"}`` (a missing side is null)."""
    out = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key, _MISSING), b.get(key, _MISSING)
        if left != right or type(left) is not type(right):
            out.append(
                {
                    "key": key,
                    "in_a": left is not _MISSING,
                    "in_b": right is not _MISSING,
                    "a": None if left is _MISSING else left,
                    "b": None if right is _MISSING else right,
                }
            )
    return out
