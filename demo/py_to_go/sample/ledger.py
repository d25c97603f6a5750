"""The stock ledger: every movement of stock, in order, never edited afterwards."""

from __future__ import annotations

from dataclasses import dataclass

from .money import Money
from .sku import normalize_sku

KINDS = ("receive", "sell", "adjust")
NO_COST = Money(0)


@dataclass(frozen=True)
class Movement:
    """One change of stock: ``quantity`` is positive in and negative out."""

    sku: str
    quantity: int
    kind: str
    unit_cost: Money = NO_COST


class Ledger:
    """Movements in the order they were recorded."""

    def __init__(self) -> None:
        self._movements: list[Movement] = []

    def record(self, sku: str, quantity: int, kind: str, unit_cost: Money = NO_COST) -> Movement:
        """Append a movement; an unknown kind or a zero quantity is a ValueError."""
        if kind not in KINDS:
            raise ValueError(f"unknown movement kind {kind!r}")
        if quantity == 0:
            raise ValueError("a movement needs a non-zero quantity")
        if kind == "receive" and quantity < 0:
            raise ValueError("a receipt adds stock")
        if kind == "sell" and quantity > 0:
            raise ValueError("a sale removes stock")
        movement = Movement(normalize_sku(sku), quantity, kind, unit_cost)
        self._movements.append(movement)
        return movement

    def balance(self, sku: str) -> int:
        """The quantity on hand: the sum of the SKU's movements."""
        key = normalize_sku(sku)
        return sum(m.quantity for m in self._movements if m.sku == key)

    def movements(self, sku: str | None = None) -> list[Movement]:
        """All movements, or those of one SKU, oldest first."""
        if sku is None:
            return list(self._movements)
        key = normalize_sku(sku)
        return [m for m in self._movements if m.sku == key]

    def received_cost(self, sku: str) -> Money:
        """What the receipts of a SKU cost in total."""
        total = Money(0)
        for movement in self.movements(sku):
            if movement.kind == "receive":
                total = total + movement.unit_cost.times(movement.quantity)
        return total
