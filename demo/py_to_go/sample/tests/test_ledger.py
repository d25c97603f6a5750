"""The ledger: recording movements and summing them."""

from __future__ import annotations

import pytest

from ..ledger import Ledger
from ..money import Money


def test_balance_and_movements() -> None:
    ledger = Ledger()
    ledger.record("ab-1", 10, "receive", Money(300))
    ledger.record("AB-1", -4, "sell")
    ledger.record("cd-2", 5, "receive", Money(100))
    ledger.record("ab-1", 2, "adjust")
    assert ledger.balance("AB-1") == 8
    assert ledger.balance("CD-2") == 5
    assert ledger.balance("EF-3") == 0
    assert [m.quantity for m in ledger.movements("ab-1")] == [10, -4, 2]
    assert len(ledger.movements()) == 4
    assert ledger.received_cost("AB-1") == Money(3000)


@pytest.mark.parametrize(
    ("quantity", "kind"), [(1, "steal"), (0, "adjust"), (-1, "receive"), (1, "sell")]
)
def test_record_rejects(quantity: int, kind: str) -> None:
    with pytest.raises(ValueError):
        Ledger().record("AB-1", quantity, kind)
