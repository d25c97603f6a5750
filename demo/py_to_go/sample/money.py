"""Money as a whole number of cents, so sums never pick up floating-point error."""

from __future__ import annotations

from dataclasses import dataclass


class MoneyError(ValueError):
    """A malformed amount."""


@dataclass(frozen=True, order=True)
class Money:
    """An amount in cents (may be negative)."""

    cents: int = 0

    def __add__(self, other: Money) -> Money:
        return Money(self.cents + other.cents)

    def __sub__(self, other: Money) -> Money:
        return Money(self.cents - other.cents)

    def times(self, quantity: int) -> Money:
        """This amount ``quantity`` times."""
        return Money(self.cents * quantity)

    def __str__(self) -> str:
        sign = "-" if self.cents < 0 else ""
        whole, cents = divmod(abs(self.cents), 100)
        return f"{sign}{whole}.{cents:02d}"


def parse_money(text: str) -> Money:
    """``"12.5"`` -> 1250 cents; at most two decimals, an optional leading minus."""
    value = text.strip()
    negative = value.startswith("-")
    if negative:
        value = value[1:]
    whole, _, fraction = value.partition(".")
    if not whole.isdigit() or (fraction and not fraction.isdigit()) or len(fraction) > 2:
        raise MoneyError(f"not an amount: {text!r}")
    cents = int(whole) * 100 + int(fraction.ljust(2, "0") or "0")
    return Money(-cents if negative else cents)
