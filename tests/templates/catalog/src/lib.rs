//! catalog: renders product pages with a shipping quote.
//!
//! Every page quotes shipping for the customer's zone and the product's weight class. There are only
//! a dozen (zone, weight class) pairs, yet [`shipping_rate`] walks the carrier's whole tariff schedule
//! for every request: a pure result recomputed over and over.

/// Size of an encoded request, in bytes.
pub const REQUEST_BYTES: usize = 64;

/// Number of shipping zones.
pub const ZONES: u32 = 4;

/// Number of weight classes.
pub const WEIGHT_CLASSES: u32 = 3;

/// Steps of the carrier's tariff schedule that [`shipping_rate`] walks.
const TARIFF_STEPS: u64 = 16_000;

/// A decoded product-page request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Product id.
    pub sku: u64,
    /// The customer's shipping zone, `0..ZONES`.
    pub zone: u32,
    /// The product's weight class, `0..WEIGHT_CLASSES`.
    pub weight_class: u32,
}

/// Writes request `n` (zone `n % 4`, weight class `n % 3`) into `raw` as the wire would carry it.
pub fn synthetic_request(n: u64, raw: &mut Vec<u8>) {
    raw.clear();
    let mut x = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    for _ in 0..REQUEST_BYTES / 8 - 1 {
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        raw.extend_from_slice(&x.to_le_bytes());
    }
    raw.extend_from_slice(&n.to_le_bytes());
}

/// Decodes and checks an encoded request.
#[inline(never)]
pub fn parse_request(raw: &[u8]) -> Request {
    let mut n_bytes = [0u8; 8];
    n_bytes.copy_from_slice(&raw[raw.len() - 8..]);
    let n = u64::from_le_bytes(n_bytes);
    // Checksum the payload a few times over, as a real decoder would validate it.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..24 {
        for &b in raw {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    Request {
        sku: h % 100_000,
        zone: (n % u64::from(ZONES)) as u32,
        weight_class: (n % u64::from(WEIGHT_CLASSES)) as u32,
    }
}

/// The shipping rate in cents for a zone and weight class, from the carrier's tariff schedule.
///
/// Pure: the same arguments always give the same rate.
#[inline(never)]
pub fn shipping_rate(zone: u32, weight_class: u32) -> u64 {
    let base = 500 + u64::from(zone) * 250 + u64::from(weight_class) * 120;
    let mut h = (u64::from(zone) << 32 | u64::from(weight_class)) ^ 0x2545_f491_4f6c_dd1d;
    for step in 0..TARIFF_STEPS {
        h ^= h >> 31;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ step;
        h ^= h >> 29;
    }
    base + h % 100
}

/// A checksum standing in for rendering the page.
#[inline(never)]
pub fn render_page(req: &Request, rate: u64) -> u64 {
    let mut h = req.sku ^ rate.rotate_left(23);
    for _ in 0..9_000 {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    h
}

/// Serves one encoded request end to end.
#[inline(never)]
pub fn handle_request(raw: &[u8]) -> u64 {
    let req = parse_request(raw);
    let rate = shipping_rate(req.zone, req.weight_class);
    render_page(&req, rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_cycle_through_zones_and_weight_classes() {
        let mut raw = Vec::new();
        for n in 0..12u64 {
            synthetic_request(n, &mut raw);
            assert_eq!(raw.len(), REQUEST_BYTES);
            let req = parse_request(&raw);
            assert_eq!(u64::from(req.zone), n % 4);
            assert_eq!(u64::from(req.weight_class), n % 3);
        }
    }

    #[test]
    fn shipping_rates_match_the_tariff() {
        // The tariff schedule's rates, computed once with the original code.
        let expected: [[u64; 3]; 4] = [
            [506, 717, 823],
            [770, 940, 1068],
            [1084, 1140, 1307],
            [1327, 1377, 1584],
        ];
        for zone in 0..ZONES {
            for weight_class in 0..WEIGHT_CLASSES {
                let rate = shipping_rate(zone, weight_class);
                assert_eq!(
                    rate,
                    expected[zone as usize][weight_class as usize],
                    "zone {zone}, class {weight_class}"
                );
                // Asking again gives the same answer.
                assert_eq!(shipping_rate(zone, weight_class), rate);
            }
        }
    }

    #[test]
    fn rates_stay_within_a_dollar_of_the_base_rate() {
        for zone in 0..ZONES {
            for weight_class in 0..WEIGHT_CLASSES {
                let base = 500 + u64::from(zone) * 250 + u64::from(weight_class) * 120;
                assert!((base..base + 100).contains(&shipping_rate(zone, weight_class)));
            }
        }
    }
}
