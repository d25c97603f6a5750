package sample

import (
	"errors"
	"reflect"
	"testing"
)

func makeCatalog(t *testing.T) *Catalog {
	t.Helper()
	catalog := NewCatalog()
	for _, add := range []struct {
		sku, name string
		price     int64
		reorder   int
	}{{"bo-2", "Bolt", 25, 100}, {"nu-1", " Nut ", 10, 0}, {"bo-1", "Bolt, long", 40, 0}} {
		if _, err := catalog.Add(add.sku, add.name, Money{add.price}, add.reorder); err != nil {
			t.Fatal(err)
		}
	}
	return catalog
}

func TestItemsAddAndGet(t *testing.T) {
	catalog := makeCatalog(t)
	if catalog.Len() != 3 {
		t.Fatalf("Len = %d", catalog.Len())
	}
	if item, err := catalog.Get("NU-1"); err != nil || item.Name != "Nut" {
		t.Errorf("Get(NU-1) = %+v, %v", item, err)
	}
	if item, err := catalog.Get(" bo-2"); err != nil || item.ReorderLevel != 100 {
		t.Errorf("Get(bo-2) = %+v, %v", item, err)
	}
	if !catalog.Contains("bo-1") || catalog.Contains("zz-1") {
		t.Error("Contains is wrong")
	}
}

func TestItemsRejectsDuplicatesAndNegativePrices(t *testing.T) {
	catalog := makeCatalog(t)
	if _, err := catalog.Add("BO-2", "again", Money{1}, 0); err == nil {
		t.Error("a duplicate SKU was accepted")
	}
	if _, err := catalog.Add("XX-1", "refund", Money{-1}, 0); err == nil {
		t.Error("a negative price was accepted")
	}
	var notFound *NotFoundError
	if _, err := catalog.Get("XX-1"); !errors.As(err, &notFound) {
		t.Errorf("Get(XX-1) error = %v; want a *NotFoundError", err)
	}
}

func TestItemsListing(t *testing.T) {
	catalog := makeCatalog(t)
	if got := catalog.Skus(); !reflect.DeepEqual(got, []string{"BO-1", "BO-2", "NU-1"}) {
		t.Errorf("Skus = %v", got)
	}
	var family []string
	for _, item := range catalog.Family("bo") {
		family = append(family, item.Sku)
	}
	if !reflect.DeepEqual(family, []string{"BO-1", "BO-2"}) {
		t.Errorf("Family = %v", family)
	}
}
