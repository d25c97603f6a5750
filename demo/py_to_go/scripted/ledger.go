package sample

import (
	"errors"
	"fmt"
)

// Kinds are the movement kinds a ledger accepts.
var Kinds = []string{"receive", "sell", "adjust"}

// Movement is one change of stock: Quantity is positive in and negative out.
type Movement struct {
	Sku      string
	Quantity int
	Kind     string
	UnitCost Money
}

// Ledger holds every movement of stock, in the order recorded, never edited afterwards.
type Ledger struct {
	movements []Movement
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{}
}

func knownKind(kind string) bool {
	for _, k := range Kinds {
		if k == kind {
			return true
		}
	}
	return false
}

// Record appends a movement; an unknown kind or a zero quantity is an error.
func (l *Ledger) Record(sku string, quantity int, kind string, unitCost Money) (Movement, error) {
	if !knownKind(kind) {
		return Movement{}, fmt.Errorf("unknown movement kind %q", kind)
	}
	if quantity == 0 {
		return Movement{}, errors.New("a movement needs a non-zero quantity")
	}
	if kind == "receive" && quantity < 0 {
		return Movement{}, errors.New("a receipt adds stock")
	}
	if kind == "sell" && quantity > 0 {
		return Movement{}, errors.New("a sale removes stock")
	}
	key, err := NormalizeSku(sku)
	if err != nil {
		return Movement{}, err
	}
	movement := Movement{Sku: key, Quantity: quantity, Kind: kind, UnitCost: unitCost}
	l.movements = append(l.movements, movement)
	return movement, nil
}

// Balance is the quantity on hand: the sum of the SKU's movements.
func (l *Ledger) Balance(sku string) int {
	total := 0
	for _, m := range l.Movements(sku) {
		total += m.Quantity
	}
	return total
}

// Movements returns the movements of one SKU (all of them for ""), oldest first.
func (l *Ledger) Movements(sku string) []Movement {
	if sku == "" {
		return append([]Movement(nil), l.movements...)
	}
	key, err := NormalizeSku(sku)
	if err != nil {
		return nil
	}
	var found []Movement
	for _, m := range l.movements {
		if m.Sku == key {
			found = append(found, m)
		}
	}
	return found
}

// ReceivedCost is what the receipts of a SKU cost in total.
func (l *Ledger) ReceivedCost(sku string) Money {
	total := Money{}
	for _, m := range l.Movements(sku) {
		if m.Kind == "receive" {
			total = total.Add(m.UnitCost.Times(m.Quantity))
		}
	}
	return total
}
