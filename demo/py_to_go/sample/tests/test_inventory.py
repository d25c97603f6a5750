"""Inventory: receiving, selling, adjusting, valuing and reordering."""

from __future__ import annotations

import pytest

from ..inventory import InsufficientStockError, Inventory
from ..items import Catalog
from ..money import Money


def make_inventory() -> Inventory:
    catalog = Catalog()
    catalog.add("BO-1", "Bolt", Money(25), reorder_level=10)
    catalog.add("NU-1", "Nut", Money(10), reorder_level=5)
    return Inventory(catalog)


def test_receive_sell_adjust() -> None:
    inventory = make_inventory()
    assert inventory.receive("bo-1", 30, Money(12)) == 30
    assert inventory.sell("BO-1", 4) == Money(100)
    assert inventory.adjust("BO-1", -1) == 25
    assert inventory.on_hand("BO-1") == 25
    with pytest.raises(InsufficientStockError):
        inventory.sell("BO-1", 26)
    with pytest.raises(InsufficientStockError):
        inventory.adjust("NU-1", -1)
    with pytest.raises(ValueError):
        inventory.receive("BO-1", 0, Money(1))
    with pytest.raises(KeyError):
        inventory.sell("XX-9", 1)


def test_value_and_reorder() -> None:
    inventory = make_inventory()
    inventory.receive("BO-1", 12, Money(12))
    inventory.receive("NU-1", 3, Money(4))
    assert inventory.stock_value() == Money(12 * 25 + 3 * 10)
    assert inventory.to_reorder() == ["NU-1"]
    inventory.sell("BO-1", 2)
    assert inventory.to_reorder() == ["BO-1", "NU-1"]
