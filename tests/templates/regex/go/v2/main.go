// svc routes API requests. `svc --seconds N [--rps R]` serves synthetic requests for N seconds at
// a steady R requests per second; `svc --self-test` checks the routing.
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"time"
)

var paths = []string{"/api/v1/items/%d", "/static/app-%d.js", "/api/v2/users/%d", "/health/%d"}

func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return x
}

// parseRequest decodes request n into its path.
//
//go:noinline
func parseRequest(n uint64) string {
	seed := mix(n + 1)
	for k := 0; k < 200; k++ {
		seed = mix(seed)
	}
	return fmt.Sprintf(paths[seed%uint64(len(paths))], seed%1000)
}

// routeRequest is the API version a path is routed to, 0 for anything else.
//
//go:noinline
func routeRequest(path string) int {
	apiPath := regexp.MustCompile(`^/api/v([0-9]+)/(\w+)/([0-9]+)$`)
	m := apiPath.FindStringSubmatch(path)
	if m == nil {
		return 0
	}
	return int(m[1][0] - '0')
}

//go:noinline
func handleRequest(n uint64) uint64 {
	return uint64(routeRequest(parseRequest(n)))
}

func selfTest() int {
	for path, want := range map[string]int{"/api/v1/items/7": 1, "/api/v2/users/3": 2, "/static/app-1.js": 0, "/api/v1/": 0} {
		if got := routeRequest(path); got != want {
			fmt.Fprintf(os.Stderr, "routeRequest(%q) = %d, want %d\n", path, got, want)
			return 1
		}
	}
	fmt.Println("self-test passed")
	return 0
}

func main() {
	seconds := flag.Float64("seconds", 10, "how long to serve")
	rps := flag.Float64("rps", 0, "requests per second (0: as fast as possible)")
	test := flag.Bool("self-test", false, "check the routing and exit")
	flag.Parse()
	if *test {
		os.Exit(selfTest())
	}
	start := time.Now()
	deadline := start.Add(time.Duration(*seconds * float64(time.Second)))
	var served, checksum uint64
	for time.Now().Before(deadline) {
		for k := 0; k < 64; k++ {
			checksum += handleRequest(served)
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
	fmt.Printf("served %d requests (checksum %d)\n", served, checksum)
}
