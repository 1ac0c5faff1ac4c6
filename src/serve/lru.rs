//! The loaded models, least recently used first out: bounded by count and by
//! the memory they were measured to take, so a server that classifies with
//! many models keeps a bounded footprint.

use std::collections::HashMap;

/// One loaded model with its cost and when it was last used.
struct Entry<V> {
    value: V,
    bytes: u64,
    used: u64,
}

/// Values by model name, at most `max_count` of them and `max_bytes` in
/// total (the entry just inserted always stays, even alone above the bound).
pub struct Lru<V> {
    entries: HashMap<String, Entry<V>>,
    clock: u64,
    pub max_count: usize,
    pub max_bytes: u64,
}

impl<V: Clone> Lru<V> {
    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        Lru { entries: HashMap::new(), clock: 0, max_count: max_count.max(1), max_bytes }
    }

    /// The value for `name`, marked as just used.
    pub fn get(&mut self, name: &str) -> Option<V> {
        self.clock += 1;
        let e = self.entries.get_mut(name)?;
        e.used = self.clock;
        Some(e.value.clone())
    }

    /// Inserts (or replaces) `name`, then drops the least recently used
    /// others while above a bound. Returns the names dropped.
    pub fn insert(&mut self, name: &str, value: V, bytes: u64) -> Vec<String> {
        self.clock += 1;
        self.entries.insert(name.to_string(), Entry { value, bytes, used: self.clock });
        let mut dropped = Vec::new();
        while self.entries.len() > self.max_count || self.bytes() > self.max_bytes {
            let oldest = self
                .entries
                .iter()
                .filter(|(n, _)| n.as_str() != name)
                .min_by_key(|(_, e)| e.used)
                .map(|(n, _)| n.clone());
            match oldest {
                Some(n) => {
                    self.entries.remove(&n);
                    dropped.push(n);
                }
                None => break,
            }
        }
        dropped
    }

    pub fn remove(&mut self, name: &str) -> Option<V> {
        self.entries.remove(name).map(|e| e.value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The measured cost of everything loaded.
    pub fn bytes(&self) -> u64 {
        self.entries.values().map(|e| e.bytes).sum()
    }
}

/// This process's resident memory in bytes (Linux: `/proc/self/statm`), or 0
/// where it cannot be read.
pub fn resident_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Hands freed memory back to the OS after a model is unloaded: glibc keeps
/// freed heap for reuse, so without this the RSS of a server that cycles
/// through models would only grow.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it takes no
    // pointers and is thread-safe in glibc.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_by_count_and_bytes() {
        let mut l = Lru::new(2, 100);
        assert!(l.insert("a", 1, 10).is_empty());
        assert!(l.insert("b", 2, 10).is_empty());
        assert_eq!(l.get("a"), Some(1)); // b is now the oldest
        assert_eq!(l.insert("c", 3, 10), ["b"]);
        assert_eq!((l.get("b"), l.len()), (None, 2));
        // Three entries and 110 bytes: the oldest (a) goes.
        assert_eq!(l.insert("d", 4, 90), ["a"]);
        assert_eq!(l.bytes(), 100);
        // One model above the bound alone still loads.
        assert_eq!(l.insert("e", 5, 500).len(), 2);
        assert_eq!((l.len(), l.get("e")), (1, Some(5)));
    }
}
