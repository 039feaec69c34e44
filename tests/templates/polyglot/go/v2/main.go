// svc prices shopping carts. `svc --seconds N [--rps R]` serves synthetic requests for N seconds
// at a steady R requests per second; `svc --self-test` checks the pricing.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"time"
)

type item struct {
	sku       uint32
	qty       uint32
	unitCents uint64
}

func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return x
}

// parseRequest decodes request n into its cart of 8 items.
//
//go:noinline
func parseRequest(n uint64, items []item) {
	seed := mix(n + 1)
	for i := range items {
		for k := 0; k < 40; k++ {
			seed = mix(seed)
		}
		items[i] = item{sku: uint32(seed % 10000), qty: 1 + uint32(seed%5), unitCents: 100 + seed%9900}
	}
}

// discountedPrice is the price of one line after volume discounts, in cents.
//
//go:noinline
func discountedPrice(it *item) uint64 {
	price := it.unitCents * uint64(it.qty)
	for step := uint64(0); step < 110; step++ {
		price = price - price/1000 + (mix(price^step) & 1)
	}
	return price
}

// priceItems is the cart's total, in cents.
//
//go:noinline
func priceItems(items []item) uint64 {
	var total uint64
	for i := range items {
		price := discountedPrice(&items[i])
		total += price
		log.Printf("debug: item %d sku %d qty %d -> %d cents (running total %d)", i, items[i].sku, items[i].qty, price, total)
	}
	return total
}

// computeTax is the tax on a total, in cents.
//
//go:noinline
func computeTax(total uint64) uint64 {
	t := total
	for i := 0; i < 200; i++ {
		t = mix(t)
	}
	return total/12 + (t & 3)
}

//go:noinline
func handleRequest(n uint64, items []item) uint64 {
	parseRequest(n, items)
	total := priceItems(items)
	return total + computeTax(total)
}

func selfTest() int {
	one := item{sku: 1, qty: 2, unitCents: 1000}
	if p := discountedPrice(&one); p == 0 || p > 2000 {
		fmt.Fprintf(os.Stderr, "discountedPrice out of range: %d\n", p)
		return 1
	}
	items := make([]item, 8)
	parseRequest(7, items)
	if priceItems(items) != priceItems(items) {
		fmt.Fprintln(os.Stderr, "priceItems is not deterministic")
		return 1
	}
	fmt.Println("self-test passed")
	return 0
}

func main() {
	seconds := flag.Float64("seconds", 10, "how long to serve")
	rps := flag.Float64("rps", 0, "requests per second (0: as fast as possible)")
	test := flag.Bool("self-test", false, "check the pricing and exit")
	flag.Parse()
	if *test {
		os.Exit(selfTest())
	}
	start := time.Now()
	deadline := start.Add(time.Duration(*seconds * float64(time.Second)))
	items := make([]item, 8)
	var served, checksum uint64
	for time.Now().Before(deadline) {
		for k := 0; k < 64; k++ {
			checksum ^= handleRequest(served, items)
			served++
		}
		if *rps > 0 {
			// Keep to the schedule: the next batch is due when served / rps seconds have passed.
			due := start.Add(time.Duration(float64(served) / *rps * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
			}
		}
	}
	fmt.Printf("served %d requests (checksum %x)\n", served, checksum)
}
