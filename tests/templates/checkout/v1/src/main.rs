//! `checkout --seconds N [--rps R]`: serves synthetic requests for N seconds, at a steady R
//! requests per second (a service under a constant load), or as fast as it can without `--rps`.

use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<u64> {
    std::env::args().skip_while(|a| a != name).nth(1).and_then(|s| s.parse().ok())
}

fn main() {
    let seconds = arg("--seconds").unwrap_or(10);
    let rps = arg("--rps").unwrap_or(0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut served = 0u64;
    let mut checksum = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            checksum ^= checkout::handle_request(served);
            served += 1;
        }
        if rps > 0 {
            // Keep to the schedule: the next batch is due when `served / rps` seconds have passed.
            let due = start + Duration::from_secs_f64(served as f64 / rps as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    println!("served {served} requests (checksum {checksum:x})");
}
