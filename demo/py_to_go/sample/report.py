"""A plain-text stock report: one row per item, then the totals."""

from __future__ import annotations

from .inventory import Inventory
from .money import Money


def stock_report(inventory: Inventory) -> str:
    """A fixed-width table of SKU, name, on hand, value, with ``*`` marking a reorder."""
    reorder = set(inventory.to_reorder())
    lines = [f"{'SKU':<10}{'ITEM':<20}{'ON HAND':>8}{'VALUE':>12}"]
    units = 0
    for sku in inventory.catalog.skus():
        item = inventory.catalog.get(sku)
        on_hand = inventory.on_hand(sku)
        units += on_hand
        value = item.unit_price.times(on_hand)
        flag = " *" if sku in reorder else ""
        lines.append(f"{sku:<10}{item.name[:19]:<20}{on_hand:>8}{value!s:>12}{flag}")
    lines.append(f"{'TOTAL':<30}{units:>8}{inventory.stock_value()!s:>12}")
    return "\n".join(lines)


def average_unit_value(inventory: Inventory) -> Money:
    """The stock value divided by the units on hand (rounded down); zero without stock."""
    units = sum(inventory.on_hand(sku) for sku in inventory.catalog.skus())
    if units == 0:
        return Money(0)
    return Money(inventory.stock_value().cents // units)
