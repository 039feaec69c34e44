/// The number of primes below `n`, by trial division.
pub fn primes_below(n: u64) -> u64 {
    // Added by fleetprof (skill memoize-pure-function): results cached per thread, keyed by the arguments.
    thread_local! {
        static FLEETPROF_MEMO: std::cell::RefCell<std::collections::HashMap<u64, u64>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    let key = n;
    if let Some(hit) = FLEETPROF_MEMO.with(|m| m.borrow().get(&key).cloned()) {
        return hit;
    }
    let value = primes_below_uncached(n);
    FLEETPROF_MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= 4096 {
            m.clear();
        }
        m.insert(key, value);
    });
    value
}

/// The uncached body of `primes_below` (memoized by fleetprof).
fn primes_below_uncached(n: u64) -> u64 {
    (2..n).filter(|k| (2..*k).take_while(|d| d * d <= *k).all(|d| k % d != 0)).count() as u64
}
