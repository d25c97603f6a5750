"""SKUs: normalization and the family prefix."""

from __future__ import annotations

import pytest

from ..sku import SkuError, normalize_sku, sku_family


def test_normalize() -> None:
    assert normalize_sku(" ab-012 ") == "AB-012"
    assert normalize_sku("WXYZ-999999") == "WXYZ-999999"


@pytest.mark.parametrize("text", ["AB12", "A-1", "ABCDE-1", "AB-", "AB-1234567", "A1-2", "AB-1x"])
def test_normalize_rejects(text: str) -> None:
    with pytest.raises(SkuError):
        normalize_sku(text)


def test_family() -> None:
    assert sku_family("cab-7") == "CAB"
