//! `catalog --seconds N`: serves synthetic product-page requests as fast as it can for N seconds.

fn main() {
    let seconds: u64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let mut served = 0u64;
    let mut checksum = 0u64;
    let mut raw = Vec::with_capacity(catalog::REQUEST_BYTES);
    while std::time::Instant::now() < deadline {
        for _ in 0..64 {
            catalog::synthetic_request(served, &mut raw);
            checksum ^= catalog::handle_request(&raw);
            served += 1;
        }
    }
    println!("served {served} requests (checksum {checksum:x})");
}
