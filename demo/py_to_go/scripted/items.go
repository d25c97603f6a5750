package sample

import (
	"fmt"
	"sort"
	"strings"
)

// Item is one catalog entry.
type Item struct {
	Sku          string
	Name         string
	UnitPrice    Money
	ReorderLevel int
}

// NotFoundError is a SKU that is not in the catalog.
type NotFoundError struct {
	Sku string
}

func (e *NotFoundError) Error() string {
	return "not in the catalog: " + e.Sku
}

// Catalog holds items by SKU; a SKU is normalized on the way in and on every lookup.
type Catalog struct {
	items map[string]Item
}

// NewCatalog returns an empty catalog.
func NewCatalog() *Catalog {
	return &Catalog{items: map[string]Item{}}
}

// Add adds an item; a SKU already in the catalog or a negative price is an error.
func (c *Catalog) Add(sku, name string, unitPrice Money, reorderLevel int) (Item, error) {
	key, err := NormalizeSku(sku)
	if err != nil {
		return Item{}, err
	}
	if _, ok := c.items[key]; ok {
		return Item{}, fmt.Errorf("duplicate SKU %s", key)
	}
	if unitPrice.Cents < 0 {
		return Item{}, fmt.Errorf("negative price for %s", key)
	}
	item := Item{Sku: key, Name: strings.TrimSpace(name), UnitPrice: unitPrice, ReorderLevel: reorderLevel}
	c.items[key] = item
	return item, nil
}

// Get returns the item for sku; a *NotFoundError when it is not in the catalog.
func (c *Catalog) Get(sku string) (Item, error) {
	key, err := NormalizeSku(sku)
	if err != nil {
		return Item{}, err
	}
	item, ok := c.items[key]
	if !ok {
		return Item{}, &NotFoundError{Sku: key}
	}
	return item, nil
}

// Contains reports whether sku is in the catalog.
func (c *Catalog) Contains(sku string) bool {
	key, err := NormalizeSku(sku)
	if err != nil {
		return false
	}
	_, ok := c.items[key]
	return ok
}

// Len is the number of items.
func (c *Catalog) Len() int {
	return len(c.items)
}

// Skus returns every SKU, sorted.
func (c *Catalog) Skus() []string {
	skus := make([]string, 0, len(c.items))
	for sku := range c.items {
		skus = append(skus, sku)
	}
	sort.Strings(skus)
	return skus
}

// Family returns the items whose SKU starts with letters, sorted by SKU.
func (c *Catalog) Family(letters string) []Item {
	wanted := strings.ToUpper(strings.TrimSpace(letters))
	var found []Item
	for _, sku := range c.Skus() {
		if family, err := SkuFamily(sku); err == nil && family == wanted {
			found = append(found, c.items[sku])
		}
	}
	return found
}
