package sample

import (
	"errors"
	"testing"
)

func TestSkuNormalize(t *testing.T) {
	for text, want := range map[string]string{" ab-012 ": "AB-012", "WXYZ-999999": "WXYZ-999999"} {
		if got, err := NormalizeSku(text); err != nil || got != want {
			t.Errorf("NormalizeSku(%q) = %q, %v; want %q", text, got, err, want)
		}
	}
}

func TestSkuNormalizeRejects(t *testing.T) {
	for _, text := range []string{"AB12", "A-1", "ABCDE-1", "AB-", "AB-1234567", "A1-2", "AB-1x"} {
		_, err := NormalizeSku(text)
		var skuErr *SkuError
		if !errors.As(err, &skuErr) {
			t.Errorf("NormalizeSku(%q) error = %v; want a *SkuError", text, err)
		}
	}
}

func TestSkuFamily(t *testing.T) {
	if got, err := SkuFamily("cab-7"); err != nil || got != "CAB" {
		t.Errorf("SkuFamily = %q, %v", got, err)
	}
}
