"""Inventory: the catalog and the ledger together (receive, sell, value, reorder)."""

from __future__ import annotations

from .items import Catalog
from .ledger import Ledger
from .money import Money


class InsufficientStockError(ValueError):
    """A sale of more than is on hand."""


class Inventory:
    """Stock of catalog items, kept through a ledger."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.ledger = Ledger()

    def receive(self, sku: str, quantity: int, unit_cost: Money) -> int:
        """Add received stock; returns the new quantity on hand."""
        item = self.catalog.get(sku)
        if quantity <= 0:
            raise ValueError("receive a positive quantity")
        self.ledger.record(item.sku, quantity, "receive", unit_cost)
        return self.on_hand(item.sku)

    def sell(self, sku: str, quantity: int) -> Money:
        """Remove sold stock; returns the sale's value at the catalog price."""
        item = self.catalog.get(sku)
        if quantity <= 0:
            raise ValueError("sell a positive quantity")
        available = self.on_hand(item.sku)
        if quantity > available:
            raise InsufficientStockError(f"{item.sku}: {quantity} wanted, {available} on hand")
        self.ledger.record(item.sku, -quantity, "sell")
        return item.unit_price.times(quantity)

    def adjust(self, sku: str, quantity: int) -> int:
        """Correct the count (a stocktake); stock never goes below zero."""
        item = self.catalog.get(sku)
        if self.on_hand(item.sku) + quantity < 0:
            raise InsufficientStockError(f"{item.sku}: cannot adjust below zero")
        self.ledger.record(item.sku, quantity, "adjust")
        return self.on_hand(item.sku)

    def on_hand(self, sku: str) -> int:
        return self.ledger.balance(sku)

    def stock_value(self) -> Money:
        """Everything on hand at catalog prices."""
        total = Money(0)
        for sku in self.catalog.skus():
            item = self.catalog.get(sku)
            total = total + item.unit_price.times(self.on_hand(sku))
        return total

    def to_reorder(self) -> list[str]:
        """SKUs at or below their reorder level, sorted."""
        return [
            sku
            for sku in self.catalog.skus()
            if self.on_hand(sku) <= self.catalog.get(sku).reorder_level
        ]
