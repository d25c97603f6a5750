"""The catalog: adding, looking up and listing items."""

from __future__ import annotations

import pytest

from ..items import Catalog
from ..money import Money


def make_catalog() -> Catalog:
    catalog = Catalog()
    catalog.add("bo-2", "Bolt", Money(25), reorder_level=100)
    catalog.add("nu-1", " Nut ", Money(10))
    catalog.add("bo-1", "Bolt, long", Money(40))
    return catalog


def test_add_and_get() -> None:
    catalog = make_catalog()
    assert len(catalog) == 3
    assert catalog.get("NU-1").name == "Nut"
    assert catalog.get(" bo-2").reorder_level == 100
    assert "bo-1" in catalog
    assert "zz-1" not in catalog


def test_rejects_duplicates_and_negative_prices() -> None:
    catalog = make_catalog()
    with pytest.raises(ValueError):
        catalog.add("BO-2", "again", Money(1))
    with pytest.raises(ValueError):
        catalog.add("XX-1", "refund", Money(-1))
    with pytest.raises(KeyError):
        catalog.get("XX-1")


def test_listing() -> None:
    catalog = make_catalog()
    assert catalog.skus() == ["BO-1", "BO-2", "NU-1"]
    assert [item.sku for item in catalog.family("bo")] == ["BO-1", "BO-2"]
