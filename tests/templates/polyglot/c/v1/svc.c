/* svc: prices shopping carts. `svc --seconds N [--rps R]` serves synthetic requests for N seconds
 * at a steady R requests per second; `svc --self-test` checks the pricing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct item {
    unsigned sku;
    unsigned qty;
    unsigned long long unit_cents;
};

static unsigned long long mix(unsigned long long x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

/* Decodes request `n` into its cart of 8 items. */
__attribute__((noinline)) void parse_request(unsigned long long n, struct item *items)
{
    unsigned long long seed = mix(n + 1);
    for (int i = 0; i < 8; i++) {
        for (int k = 0; k < 40; k++)
            seed = mix(seed);
        items[i].sku = (unsigned)(seed % 10000);
        items[i].qty = 1 + (unsigned)(seed % 5);
        items[i].unit_cents = 100 + seed % 9900;
    }
}

/* The price of one line after volume discounts, in cents. */
__attribute__((noinline)) unsigned long long discounted_price(const struct item *item)
{
    unsigned long long price = item->unit_cents * item->qty;
    for (unsigned long long step = 0; step < 110; step++)
        price = price - price / 1000 + (mix(price ^ step) & 1);
    return price;
}

/* The cart's total, in cents. */
__attribute__((noinline)) unsigned long long price_items(const struct item *items, int n)
{
    unsigned long long total = 0;
    for (int i = 0; i < n; i++) {
        unsigned long long price = discounted_price(&items[i]);
        total += price;
    }
    return total;
}

/* Tax on a total, in cents. */
__attribute__((noinline)) unsigned long long compute_tax(unsigned long long total)
{
    unsigned long long t = total;
    for (int i = 0; i < 200; i++)
        t = mix(t);
    return total / 12 + (t & 3);
}

__attribute__((noinline)) unsigned long long handle_request(unsigned long long n)
{
    struct item items[8];
    parse_request(n, items);
    unsigned long long total = price_items(items, 8);
    return total + compute_tax(total);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int self_test(void)
{
    struct item one = {1, 2, 1000};
    unsigned long long p = discounted_price(&one);
    if (p == 0 || p > 2000) {
        fprintf(stderr, "discounted_price out of range: %llu\n", p);
        return 1;
    }
    struct item items[8];
    parse_request(7, items);
    if (price_items(items, 8) != price_items(items, 8)) {
        fprintf(stderr, "price_items is not deterministic\n");
        return 1;
    }
    printf("self-test passed\n");
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = 10, rps = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--self-test") == 0)
            return self_test();
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--rps") == 0 && i + 1 < argc)
            rps = atof(argv[++i]);
    }
    double start = now(), deadline = start + seconds;
    unsigned long long served = 0, checksum = 0;
    while (now() < deadline) {
        for (int k = 0; k < 64; k++)
            checksum ^= handle_request(served++);
        if (rps > 0) {
            /* Keep to the schedule: the next batch is due when served / rps seconds have passed. */
            double wait = start + served / rps - now();
            if (wait > 0) {
                struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
    }
    printf("served %llu requests (checksum %llx)\n", served, checksum);
    return 0;
}
