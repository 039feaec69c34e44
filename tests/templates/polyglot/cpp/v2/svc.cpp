// svc: prices shopping carts. `svc --seconds N [--rps R]` serves synthetic requests for N seconds
// at a steady R requests per second; `svc --self-test` checks the pricing.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>
#include <vector>

namespace shop {

struct Item {
    std::uint32_t sku;
    std::uint32_t qty;
    std::uint64_t unit_cents;
};

static std::uint64_t mix(std::uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

// Decodes request `n` into its cart of 8 items.
__attribute__((noinline)) std::vector<Item> parse_request(std::uint64_t n) {
    std::uint64_t seed = mix(n + 1);
    std::vector<Item> items;
    items.reserve(8);
    for (int i = 0; i < 8; ++i) {
        for (int k = 0; k < 40; ++k) seed = mix(seed);
        items.push_back(Item{static_cast<std::uint32_t>(seed % 10000),
                             1 + static_cast<std::uint32_t>(seed % 5), 100 + seed % 9900});
    }
    return items;
}

// The price of one line after volume discounts, in cents.
__attribute__((noinline)) std::uint64_t discounted_price(const Item& item) {
    std::uint64_t price = item.unit_cents * item.qty;
    for (std::uint64_t step = 0; step < 110; ++step) price = price - price / 1000 + (mix(price ^ step) & 1);
    return price;
}

// The cart's total, in cents.
__attribute__((noinline)) std::uint64_t price_items(const std::vector<Item>& items) {
    std::uint64_t total = 0;
    for (const Item& item : items) {
        std::uint64_t price = discounted_price(item);
        total += price;
        std::cerr << "debug: item sku " << item.sku << " qty " << item.qty << " -> " << price
                  << " cents (running total " << total << ")" << std::endl;
    }
    return total;
}

// Tax on a total, in cents.
__attribute__((noinline)) std::uint64_t compute_tax(std::uint64_t total) {
    std::uint64_t t = total;
    for (int i = 0; i < 200; ++i) t = mix(t);
    return total / 12 + (t & 3);
}

__attribute__((noinline)) std::uint64_t handle_request(std::uint64_t n) {
    std::vector<Item> items = parse_request(n);
    std::uint64_t total = price_items(items);
    return total + compute_tax(total);
}

}  // namespace shop

static int self_test() {
    shop::Item one{1, 2, 1000};
    std::uint64_t p = shop::discounted_price(one);
    if (p == 0 || p > 2000) {
        std::cerr << "discounted_price out of range: " << p << "\n";
        return 1;
    }
    auto items = shop::parse_request(7);
    if (shop::price_items(items) != shop::price_items(items)) {
        std::cerr << "price_items is not deterministic\n";
        return 1;
    }
    std::cout << "self-test passed\n";
    return 0;
}

int main(int argc, char** argv) {
    double seconds = 10, rps = 0;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--self-test") == 0) return self_test();
        if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) seconds = std::atof(argv[++i]);
        else if (std::strcmp(argv[i], "--rps") == 0 && i + 1 < argc) rps = std::atof(argv[++i]);
    }
    using clock = std::chrono::steady_clock;
    auto start = clock::now();
    auto deadline = start + std::chrono::duration<double>(seconds);
    std::uint64_t served = 0, checksum = 0;
    while (clock::now() < deadline) {
        for (int k = 0; k < 64; ++k) checksum ^= shop::handle_request(served++);
        if (rps > 0) {
            // Keep to the schedule: the next batch is due when served / rps seconds have passed.
            auto due = start + std::chrono::duration<double>(served / rps);
            std::this_thread::sleep_until(due);
        }
    }
    std::cout << "served " << served << " requests (checksum " << std::hex << checksum << ")\n";
    return 0;
}
