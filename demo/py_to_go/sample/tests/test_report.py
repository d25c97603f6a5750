"""The stock report's layout and totals."""

from __future__ import annotations

from ..inventory import Inventory
from ..items import Catalog
from ..money import Money
from ..report import average_unit_value, stock_report


def test_report() -> None:
    catalog = Catalog()
    catalog.add("BO-1", "Bolt", Money(25), reorder_level=10)
    catalog.add("NU-1", "Nut", Money(10))
    inventory = Inventory(catalog)
    inventory.receive("BO-1", 8, Money(12))
    inventory.receive("NU-1", 40, Money(4))
    assert stock_report(inventory).splitlines() == [
        "SKU       ITEM                 ON HAND       VALUE",
        "BO-1      Bolt                       8        2.00 *",
        "NU-1      Nut                       40        4.00",
        "TOTAL                               48        6.00",
    ]
    assert average_unit_value(inventory) == Money(12)


def test_empty_inventory() -> None:
    inventory = Inventory(Catalog())
    assert average_unit_value(inventory) == Money(0)
    assert stock_report(inventory).splitlines()[-1].split() == ["TOTAL", "0", "0.00"]
