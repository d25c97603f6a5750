"""Money: parsing, formatting and arithmetic in cents."""

from __future__ import annotations

import pytest

from ..money import Money, MoneyError, parse_money


def test_parse_and_format() -> None:
    assert parse_money("12.5") == Money(1250)
    assert parse_money(" 3 ") == Money(300)
    assert parse_money("-0.07") == Money(-7)
    assert str(Money(1250)) == "12.50"
    assert str(Money(-7)) == "-0.07"
    assert str(Money(0)) == "0.00"


@pytest.mark.parametrize("text", ["", "abc", "1.234", "1.2.3", "--1", ".5"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(MoneyError):
        parse_money(text)


def test_arithmetic() -> None:
    assert Money(150) + Money(275) == Money(425)
    assert Money(150) - Money(275) == Money(-125)
    assert Money(199).times(3) == Money(597)
    assert Money(100) < Money(101)
