"""stockroom: a tiny inventory library (money, SKUs, a catalog, a stock ledger, reports).

The sample the py_to_go demo converts to Go. Its modules import each other, so the
conversion has an order (money and sku first, the report last) and files that can be
converted at the same time.
"""

from .inventory import InsufficientStockError, Inventory
from .items import Catalog, Item
from .ledger import Ledger, Movement
from .money import Money, MoneyError
from .report import stock_report
from .sku import SkuError, normalize_sku

__all__ = [
    "Catalog",
    "InsufficientStockError",
    "Inventory",
    "Item",
    "Ledger",
    "Money",
    "MoneyError",
    "Movement",
    "SkuError",
    "normalize_sku",
    "stock_report",
]
