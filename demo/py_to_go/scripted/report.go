package sample

import (
	"fmt"
	"strings"
)

// StockReport is a fixed-width table of SKU, name, on hand and value, with "*" marking a
// reorder, then the totals.
func StockReport(inv *Inventory) string {
	reorder := map[string]bool{}
	for _, sku := range inv.ToReorder() {
		reorder[sku] = true
	}
	lines := []string{fmt.Sprintf("%-10s%-20s%8s%12s", "SKU", "ITEM", "ON HAND", "VALUE")}
	units := 0
	for _, sku := range inv.Catalog.Skus() {
		item, _ := inv.Catalog.Get(sku)
		onHand := inv.OnHand(sku)
		units += onHand
		value := item.UnitPrice.Times(onHand)
		flag := ""
		if reorder[sku] {
			flag = " *"
		}
		name := []rune(item.Name)
		if len(name) > 19 {
			name = name[:19]
		}
		lines = append(lines, fmt.Sprintf("%-10s%-20s%8d%12s%s", sku, string(name), onHand, value, flag))
	}
	lines = append(lines, fmt.Sprintf("%-30s%8d%12s", "TOTAL", units, inv.StockValue()))
	return strings.Join(lines, "\n")
}

// AverageUnitValue is the stock value divided by the units on hand (rounded down); zero
// without stock.
func AverageUnitValue(inv *Inventory) Money {
	units := 0
	for _, sku := range inv.Catalog.Skus() {
		units += inv.OnHand(sku)
	}
	if units == 0 {
		return Money{}
	}
	return Money{inv.StockValue().Cents / int64(units)}
}
