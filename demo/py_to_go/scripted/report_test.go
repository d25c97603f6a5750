package sample

import (
	"reflect"
	"strings"
	"testing"
)

func TestReportLayout(t *testing.T) {
	catalog := NewCatalog()
	if _, err := catalog.Add("BO-1", "Bolt", Money{25}, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.Add("NU-1", "Nut", Money{10}, 0); err != nil {
		t.Fatal(err)
	}
	inv := NewInventory(catalog)
	if _, err := inv.Receive("BO-1", 8, Money{12}); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.Receive("NU-1", 40, Money{4}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"SKU       ITEM                 ON HAND       VALUE",
		"BO-1      Bolt                       8        2.00 *",
		"NU-1      Nut                       40        4.00",
		"TOTAL                               48        6.00",
	}
	if got := strings.Split(StockReport(inv), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("StockReport =\n%s", strings.Join(got, "\n"))
	}
	if got := AverageUnitValue(inv); got != (Money{12}) {
		t.Errorf("AverageUnitValue = %v", got)
	}
}

func TestReportEmptyInventory(t *testing.T) {
	inv := NewInventory(NewCatalog())
	if got := AverageUnitValue(inv); got != (Money{}) {
		t.Errorf("AverageUnitValue = %v", got)
	}
	lines := strings.Split(StockReport(inv), "\n")
	if got := strings.Fields(lines[len(lines)-1]); !reflect.DeepEqual(got, []string{"TOTAL", "0", "0.00"}) {
		t.Errorf("last line = %v", got)
	}
}
