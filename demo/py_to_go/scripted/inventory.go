package sample

import (
	"errors"
	"fmt"
)

// InsufficientStockError is a sale or adjustment of more than is on hand.
type InsufficientStockError struct {
	Message string
}

func (e *InsufficientStockError) Error() string {
	return e.Message
}

// Inventory is stock of catalog items, kept through a ledger.
type Inventory struct {
	Catalog *Catalog
	Ledger  *Ledger
}

// NewInventory returns an inventory of the catalog's items with an empty ledger.
func NewInventory(catalog *Catalog) *Inventory {
	return &Inventory{Catalog: catalog, Ledger: NewLedger()}
}

// Receive adds received stock; returns the new quantity on hand.
func (inv *Inventory) Receive(sku string, quantity int, unitCost Money) (int, error) {
	item, err := inv.Catalog.Get(sku)
	if err != nil {
		return 0, err
	}
	if quantity <= 0 {
		return 0, errors.New("receive a positive quantity")
	}
	if _, err := inv.Ledger.Record(item.Sku, quantity, "receive", unitCost); err != nil {
		return 0, err
	}
	return inv.OnHand(item.Sku), nil
}

// Sell removes sold stock; returns the sale's value at the catalog price.
func (inv *Inventory) Sell(sku string, quantity int) (Money, error) {
	item, err := inv.Catalog.Get(sku)
	if err != nil {
		return Money{}, err
	}
	if quantity <= 0 {
		return Money{}, errors.New("sell a positive quantity")
	}
	available := inv.OnHand(item.Sku)
	if quantity > available {
		return Money{}, &InsufficientStockError{
			fmt.Sprintf("%s: %d wanted, %d on hand", item.Sku, quantity, available),
		}
	}
	if _, err := inv.Ledger.Record(item.Sku, -quantity, "sell", Money{}); err != nil {
		return Money{}, err
	}
	return item.UnitPrice.Times(quantity), nil
}

// Adjust corrects the count (a stocktake); stock never goes below zero.
func (inv *Inventory) Adjust(sku string, quantity int) (int, error) {
	item, err := inv.Catalog.Get(sku)
	if err != nil {
		return 0, err
	}
	if inv.OnHand(item.Sku)+quantity < 0 {
		return 0, &InsufficientStockError{item.Sku + ": cannot adjust below zero"}
	}
	if _, err := inv.Ledger.Record(item.Sku, quantity, "adjust", Money{}); err != nil {
		return 0, err
	}
	return inv.OnHand(item.Sku), nil
}

// OnHand is the quantity of sku in stock.
func (inv *Inventory) OnHand(sku string) int {
	return inv.Ledger.Balance(sku)
}

// StockValue is everything on hand at catalog prices.
func (inv *Inventory) StockValue() Money {
	total := Money{}
	for _, sku := range inv.Catalog.Skus() {
		item, _ := inv.Catalog.Get(sku)
		total = total.Add(Money{item.UnitPrice.Cents * int64(inv.OnHand(sku))})
	}
	return total
}

// ToReorder returns the SKUs at or below their reorder level, sorted.
func (inv *Inventory) ToReorder() []string {
	var skus []string
	for _, sku := range inv.Catalog.Skus() {
		item, _ := inv.Catalog.Get(sku)
		if inv.OnHand(sku) <= item.ReorderLevel {
			skus = append(skus, sku)
		}
	}
	return skus
}
