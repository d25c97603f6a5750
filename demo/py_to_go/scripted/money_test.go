package sample

import (
	"errors"
	"testing"
)

func TestMoneyParseAndFormat(t *testing.T) {
	cases := map[string]int64{"12.5": 1250, " 3 ": 300, "-0.07": -7}
	for text, cents := range cases {
		got, err := ParseMoney(text)
		if err != nil || got != (Money{cents}) {
			t.Errorf("ParseMoney(%q) = %v, %v; want %d cents", text, got, err, cents)
		}
	}
	for cents, want := range map[int64]string{1250: "12.50", -7: "-0.07", 0: "0.00"} {
		if got := (Money{cents}).String(); got != want {
			t.Errorf("Money{%d}.String() = %q; want %q", cents, got, want)
		}
	}
}

func TestMoneyParseRejects(t *testing.T) {
	for _, text := range []string{"", "abc", "1.234", "1.2.3", "--1", ".5"} {
		_, err := ParseMoney(text)
		var moneyErr *MoneyError
		if !errors.As(err, &moneyErr) {
			t.Errorf("ParseMoney(%q) error = %v; want a *MoneyError", text, err)
		}
	}
}

func TestMoneyArithmetic(t *testing.T) {
	if got := (Money{150}).Add(Money{275}); got != (Money{425}) {
		t.Errorf("add = %v", got)
	}
	if got := (Money{150}).Sub(Money{275}); got != (Money{-125}) {
		t.Errorf("sub = %v", got)
	}
	if got := (Money{199}).Times(3); got != (Money{597}) {
		t.Errorf("times = %v", got)
	}
	if !(Money{100}).Less(Money{101}) {
		t.Error("100 should be less than 101")
	}
}
