// Package sample is stockroom, a tiny inventory library (money, SKUs, a catalog, a stock
// ledger, reports).
//
// Its files depend on each other, so the conversion has an order (money and sku first,
// the report last) and files that can be converted at the same time.
package sample
