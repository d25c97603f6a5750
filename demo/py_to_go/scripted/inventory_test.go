package sample

import (
	"errors"
	"reflect"
	"testing"
)

func makeInventory(t *testing.T) *Inventory {
	t.Helper()
	catalog := NewCatalog()
	if _, err := catalog.Add("BO-1", "Bolt", Money{25}, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.Add("NU-1", "Nut", Money{10}, 5); err != nil {
		t.Fatal(err)
	}
	return NewInventory(catalog)
}

func TestInventoryReceiveSellAdjust(t *testing.T) {
	inv := makeInventory(t)
	if got, err := inv.Receive("bo-1", 30, Money{12}); err != nil || got != 30 {
		t.Fatalf("Receive = %d, %v", got, err)
	}
	if got, err := inv.Sell("BO-1", 4); err != nil || got != (Money{100}) {
		t.Fatalf("Sell = %v, %v", got, err)
	}
	if got, err := inv.Adjust("BO-1", -1); err != nil || got != 25 {
		t.Fatalf("Adjust = %d, %v", got, err)
	}
	if inv.OnHand("BO-1") != 25 {
		t.Errorf("OnHand = %d", inv.OnHand("BO-1"))
	}
	var short *InsufficientStockError
	if _, err := inv.Sell("BO-1", 26); !errors.As(err, &short) {
		t.Errorf("overselling: %v", err)
	}
	if _, err := inv.Adjust("NU-1", -1); !errors.As(err, &short) {
		t.Errorf("adjusting below zero: %v", err)
	}
	if _, err := inv.Receive("BO-1", 0, Money{1}); err == nil {
		t.Error("receiving nothing was accepted")
	}
	var notFound *NotFoundError
	if _, err := inv.Sell("XX-9", 1); !errors.As(err, &notFound) {
		t.Errorf("selling an unknown SKU: %v", err)
	}
}

func TestInventoryValueAndReorder(t *testing.T) {
	inv := makeInventory(t)
	if _, err := inv.Receive("BO-1", 12, Money{12}); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.Receive("NU-1", 3, Money{4}); err != nil {
		t.Fatal(err)
	}
	if got := inv.StockValue(); got != (Money{12*25 + 3*10}) {
		t.Errorf("StockValue = %v", got)
	}
	if got := inv.ToReorder(); !reflect.DeepEqual(got, []string{"NU-1"}) {
		t.Errorf("ToReorder = %v", got)
	}
	if _, err := inv.Sell("BO-1", 2); err != nil {
		t.Fatal(err)
	}
	if got := inv.ToReorder(); !reflect.DeepEqual(got, []string{"BO-1", "NU-1"}) {
		t.Errorf("ToReorder = %v", got)
	}
}
