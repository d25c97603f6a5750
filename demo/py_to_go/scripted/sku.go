package sample

import (
	"fmt"
	"strings"
)

// SkuError is a string that is not a SKU.
type SkuError struct {
	Reason string
	Text   string
}

func (e *SkuError) Error() string {
	return fmt.Sprintf("%s: %q", e.Reason, e.Text)
}

func allASCIILetters(s string) bool {
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z') {
			return false
		}
	}
	return s != ""
}

func allASCIIDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// NormalizeSku trims and upper-cases a SKU: " ab-012 " -> "AB-012". A SKU is two to four
// letters, a dash, one to six digits.
func NormalizeSku(text string) (string, error) {
	value := strings.ToUpper(strings.TrimSpace(text))
	prefix, number, found := strings.Cut(value, "-")
	if !found {
		return "", &SkuError{"a SKU needs a dash", text}
	}
	if len(prefix) < 2 || len(prefix) > 4 || !allASCIILetters(prefix) {
		return "", &SkuError{"a SKU starts with 2 to 4 letters", text}
	}
	if len(number) < 1 || len(number) > 6 || !allASCIIDigits(number) {
		return "", &SkuError{"a SKU ends with 1 to 6 digits", text}
	}
	return prefix + "-" + number, nil
}

// SkuFamily returns the letters of a SKU: "AB-12" -> "AB".
func SkuFamily(sku string) (string, error) {
	normalized, err := NormalizeSku(sku)
	if err != nil {
		return "", err
	}
	prefix, _, _ := strings.Cut(normalized, "-")
	return prefix, nil
}
