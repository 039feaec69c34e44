//! Space in the kernel's row array: every loaded table takes one contiguous range of rows.

use std::collections::BTreeMap;

/// First-fit allocator of contiguous row ranges, coalescing freed neighbours.
#[derive(Debug, Clone)]
pub struct RowAllocator {
    /// Free ranges: start → length.
    free: BTreeMap<u32, u32>,
    capacity: u32,
    used: u32,
}

impl RowAllocator {
    /// An allocator over rows `0..capacity`.
    pub fn new(capacity: u32) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self {
            free,
            capacity,
            used: 0,
        }
    }

    /// Rows in use.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// Rows in all.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The longest free range: the largest table that fits now.
    pub fn largest_free(&self) -> u32 {
        self.free.values().copied().max().unwrap_or(0)
    }

    /// The start of a free range of `len` rows, now taken; `None` when no range is long enough.
    pub fn allocate(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return Some(0);
        }
        let (&start, &free_len) = self.free.iter().find(|&(_, &l)| l >= len)?;
        self.free.remove(&start);
        if free_len > len {
            self.free.insert(start + len, free_len - len);
        }
        self.used += len;
        Some(start)
    }

    /// Gives back a range returned by [`RowAllocator::allocate`].
    pub fn release(&mut self, start: u32, len: u32) {
        if len == 0 {
            return;
        }
        self.used -= len;
        let (mut start, mut len) = (start, len);
        if let Some((&prev, &prev_len)) = self.free.range(..start).next_back()
            && prev + prev_len == start
        {
            self.free.remove(&prev);
            start = prev;
            len += prev_len;
        }
        if let Some(&next_len) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += next_len;
        }
        self.free.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocations fit, fail when full, and freed neighbours coalesce into one range again.
    #[test]
    fn allocates_releases_and_coalesces() {
        let mut a = RowAllocator::new(100);
        let x = a.allocate(40).unwrap();
        let y = a.allocate(40).unwrap();
        assert_eq!((x, y), (0, 40));
        assert_eq!(a.allocate(30), None);
        assert_eq!(a.largest_free(), 20);
        let z = a.allocate(20).unwrap();
        assert_eq!(z, 80);
        assert_eq!(a.largest_free(), 0);
        a.release(x, 40);
        a.release(z, 20);
        a.release(y, 40);
        assert_eq!(a.used(), 0);
        assert_eq!(a.allocate(100), Some(0));
    }
}
