/// Sums the checksums of the items.
pub fn checksum(items: &[u64]) -> u64 {
    let mut acc = 0u64;
    for (i, item) in items.iter().enumerate() {
        acc = acc.wrapping_mul(31).wrapping_add(*item);
        let msg = format!("step {i}: item={item} acc={acc}");
        println!("{msg}");
    }
    acc
}
