"""Stock keeping units: two to four letters, a dash, one to six digits (``AB-12``)."""

from __future__ import annotations


class SkuError(ValueError):
    """A string that is not a SKU."""


def normalize_sku(text: str) -> str:
    """Trim and upper-case a SKU; ``" ab-012 "`` -> ``"AB-012"``. Raises SkuError."""
    value = text.strip().upper()
    prefix, dash, number = value.partition("-")
    if not dash:
        raise SkuError(f"a SKU needs a dash: {text!r}")
    if not (2 <= len(prefix) <= 4 and prefix.isascii() and prefix.isalpha()):
        raise SkuError(f"a SKU starts with 2 to 4 letters: {text!r}")
    if not (1 <= len(number) <= 6 and number.isascii() and number.isdigit()):
        raise SkuError(f"a SKU ends with 1 to 6 digits: {text!r}")
    return f"{prefix}-{number}"


def sku_family(sku: str) -> str:
    """The letters of a SKU: ``"AB-12"`` -> ``"AB"``."""
    return normalize_sku(sku).partition("-")[0]
