//! checkout: prices shopping carts.

/// One line of a cart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Stock keeping unit.
    pub sku: u32,
    /// Quantity.
    pub qty: u32,
    /// Unit price in cents.
    pub unit_cents: u64,
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x
}

/// Decodes request `n` into its cart.
#[inline(never)]
pub fn parse_request(n: u64) -> Vec<Item> {
    let mut seed = mix(n + 1);
    let mut items = Vec::with_capacity(8);
    for _ in 0..8 {
        for _ in 0..360 {
            seed = mix(seed);
        }
        items.push(Item { sku: (seed % 10_000) as u32, qty: 1 + (seed % 5) as u32, unit_cents: 100 + seed % 9_900 });
    }
    items
}

/// The price of one line after volume discounts, in cents.
#[inline(never)]
pub fn discounted_price(item: &Item) -> u64 {
    let mut price = item.unit_cents * u64::from(item.qty);
    // Discount tiers are applied one rounding step at a time.
    for step in 0..110u64 {
        price = price - price / 1000 + (mix(price ^ step) & 1);
    }
    price
}

/// The cart's total, in cents.
#[inline(never)]
pub fn price_items(items: &[Item]) -> u64 {
    let mut total = 0;
    for item in items {
        let price = discounted_price(item);
        total += price;
    }
    let line = format!("debug: priced cart {items:?} -> {total} cents");
    eprintln!("{line}");
    total
}

/// Tax on a total, in cents.
#[inline(never)]
pub fn compute_tax(total: u64) -> u64 {
    let mut t = total;
    for _ in 0..1800 {
        t = mix(t);
    }
    total / 12 + (t & 3)
}

/// A checksum standing in for rendering the receipt.
#[inline(never)]
pub fn render_receipt(items: &[Item], total: u64, tax: u64) -> u64 {
    let mut h = total ^ tax.rotate_left(17);
    for item in items {
        for _ in 0..270 {
            h = mix(h ^ u64::from(item.sku));
        }
    }
    h
}

/// Serves one request end to end.
#[inline(never)]
pub fn handle_request(n: u64) -> u64 {
    let items = parse_request(n);
    let total = price_items(&items);
    let tax = compute_tax(total);
    render_receipt(&items, total, tax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carts_have_eight_priced_lines() {
        let items = parse_request(7);
        assert_eq!(items.len(), 8);
        assert!(items.iter().all(|i| discounted_price(i) > 0));
    }

    #[test]
    fn discounts_never_raise_prices() {
        let item = Item { sku: 1, qty: 3, unit_cents: 5_000 };
        assert!(discounted_price(&item) <= 15_000);
        assert!(price_items(&[item.clone(), item]) > 0);
    }
}
