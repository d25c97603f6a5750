"""The catalog: what can be stocked, at what price, and when to reorder it."""

from __future__ import annotations

from dataclasses import dataclass

from .money import Money
from .sku import normalize_sku, sku_family


@dataclass(frozen=True)
class Item:
    """One catalog entry."""

    sku: str
    name: str
    unit_price: Money
    reorder_level: int = 0


class Catalog:
    """Items by SKU; a SKU is normalized on the way in and on every lookup."""

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}

    def add(self, sku: str, name: str, unit_price: Money, reorder_level: int = 0) -> Item:
        """Add an item; a SKU already in the catalog or a negative price is a ValueError."""
        key = normalize_sku(sku)
        if key in self._items:
            raise ValueError(f"duplicate SKU {key}")
        if unit_price.cents < 0:
            raise ValueError(f"negative price for {key}")
        item = Item(key, name.strip(), unit_price, reorder_level)
        self._items[key] = item
        return item

    def get(self, sku: str) -> Item:
        """The item for ``sku``; KeyError when it is not in the catalog."""
        key = normalize_sku(sku)
        if key not in self._items:
            raise KeyError(key)
        return self._items[key]

    def __contains__(self, sku: str) -> bool:
        return normalize_sku(sku) in self._items

    def __len__(self) -> int:
        return len(self._items)

    def skus(self) -> list[str]:
        """Every SKU, sorted."""
        return sorted(self._items)

    def family(self, letters: str) -> list[Item]:
        """The items whose SKU starts with ``letters``, sorted by SKU."""
        wanted = letters.strip().upper()
        return [self._items[s] for s in self.skus() if sku_family(s) == wanted]
