package sample

import (
	"reflect"
	"testing"
)

func TestLedgerBalanceAndMovements(t *testing.T) {
	ledger := NewLedger()
	steps := []struct {
		sku      string
		quantity int
		kind     string
		cost     int64
	}{{"ab-1", 10, "receive", 300}, {"AB-1", -4, "sell", 0}, {"cd-2", 5, "receive", 100}, {"ab-1", 2, "adjust", 0}}
	for _, s := range steps {
		if _, err := ledger.Record(s.sku, s.quantity, s.kind, Money{s.cost}); err != nil {
			t.Fatal(err)
		}
	}
	for sku, want := range map[string]int{"AB-1": 8, "CD-2": 5, "EF-3": 0} {
		if got := ledger.Balance(sku); got != want {
			t.Errorf("Balance(%s) = %d; want %d", sku, got, want)
		}
	}
	var quantities []int
	for _, m := range ledger.Movements("ab-1") {
		quantities = append(quantities, m.Quantity)
	}
	if !reflect.DeepEqual(quantities, []int{10, -4, 2}) {
		t.Errorf("Movements(ab-1) quantities = %v", quantities)
	}
	if got := len(ledger.Movements("")); got != 4 {
		t.Errorf("len(Movements()) = %d", got)
	}
	if got := ledger.ReceivedCost("AB-1"); got != (Money{3000}) {
		t.Errorf("ReceivedCost = %v", got)
	}
}

func TestLedgerRecordRejects(t *testing.T) {
	for _, c := range []struct {
		quantity int
		kind     string
	}{{1, "steal"}, {0, "adjust"}, {-1, "receive"}, {1, "sell"}} {
		if _, err := NewLedger().Record("AB-1", c.quantity, c.kind, Money{}); err == nil {
			t.Errorf("Record(%d, %q) was accepted", c.quantity, c.kind)
		}
	}
}
