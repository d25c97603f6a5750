package sample

import (
	"fmt"
	"strconv"
	"strings"
)

// MoneyError is a malformed amount.
type MoneyError struct {
	Text string
}

func (e *MoneyError) Error() string {
	return fmt.Sprintf("not an amount: %q", e.Text)
}

// Money is an amount in cents (may be negative), so sums never pick up floating-point error.
type Money struct {
	Cents int64
}

// Add returns m + other.
func (m Money) Add(other Money) Money {
	return Money{m.Cents + other.Cents}
}

// Sub returns m - other.
func (m Money) Sub(other Money) Money {
	return Money{m.Cents - other.Cents}
}

// Times returns this amount quantity times.
func (m Money) Times(quantity int) Money {
	return Money{m.Cents * int64(quantity)}
}

// Less orders amounts.
func (m Money) Less(other Money) bool {
	return m.Cents < other.Cents
}

// String formats the amount with two decimals: "12.50", "-0.07".
func (m Money) String() string {
	sign := ""
	cents := m.Cents
	if cents < 0 {
		sign = "-"
		cents = -cents
	}
	return fmt.Sprintf("%s%d.%02d", sign, cents/100, cents%100)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// ParseMoney reads "12.5" as 1250 cents: at most two decimals, an optional leading minus.
func ParseMoney(text string) (Money, error) {
	value := strings.TrimSpace(text)
	negative := strings.HasPrefix(value, "-")
	if negative {
		value = value[1:]
	}
	whole, fraction, _ := strings.Cut(value, ".")
	if !isDigits(whole) || (fraction != "" && !isDigits(fraction)) || len(fraction) > 2 {
		return Money{}, &MoneyError{Text: text}
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return Money{}, &MoneyError{Text: text}
	}
	cents := w * 100
	if fraction != "" {
		f, _ := strconv.ParseInt((fraction + "00")[:2], 10, 64)
		cents += f
	}
	if negative {
		cents = -cents
	}
	return Money{cents}, nil
}
