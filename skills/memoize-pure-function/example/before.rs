/// The number of primes below `n`, by trial division.
pub fn primes_below(n: u64) -> u64 {
    (2..n).filter(|k| (2..*k).take_while(|d| d * d <= *k).all(|d| k % d != 0)).count() as u64
}
