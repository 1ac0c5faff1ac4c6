//! The loaded models, least recently used first out: bounded by count and by
//! the memory they were measured to take, so a server that classifies with
//! many models keeps a bounded footprint. A model's memory has two parts:
//! what it keeps while loaded (weights, session) and the working memory of one
//! run. Runs of different models take turns, so the bound counts every kept
//! part and the largest working part once.

use std::collections::HashMap;

/// One loaded model with its cost and when it was last used.
struct Entry<V> {
    value: V,
    cost: Cost,
    used: u64,
}

/// What a loaded model was measured to take, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Kept while the model is loaded.
    pub kept: u64,
    /// Taken for the duration of one run of its largest batch, then freed.
    pub working: u64,
}

/// Values by model name, at most `max_count` of them and `max_bytes` in
/// total ([`Lru::bytes`]; the entry just inserted always stays, even alone
/// above the bound).
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
    pub fn insert(&mut self, name: &str, value: V, cost: Cost) -> Vec<String> {
        self.clock += 1;
        self.entries.insert(name.to_string(), Entry { value, cost, used: self.clock });
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

    /// The measured cost of everything loaded: all kept memory plus the
    /// largest working memory (one run at a time).
    pub fn bytes(&self) -> u64 {
        let kept: u64 = self.entries.values().map(|e| e.cost.kept).sum();
        kept + self.entries.values().map(|e| e.cost.working).max().unwrap_or(0)
    }
}

/// This process's resident memory in bytes (Linux: `/proc/self/statm`), or 0
/// where it cannot be read.
pub fn resident_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Resets the process's peak resident memory (`VmHWM`) to its current
/// resident memory, so [`peak_resident_bytes`] measures from now. Linux only;
/// elsewhere the peak is not measured (0).
pub fn reset_peak_resident() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident memory since the last [`reset_peak_resident`]
/// (`VmHWM` in `/proc/self/status`), or 0 where it cannot be read.
pub fn peak_resident_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
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
        let kept = |kept| Cost { kept, working: 0 };
        let mut l = Lru::new(2, 100);
        assert!(l.insert("a", 1, kept(10)).is_empty());
        assert!(l.insert("b", 2, kept(10)).is_empty());
        assert_eq!(l.get("a"), Some(1)); // b is now the oldest
        assert_eq!(l.insert("c", 3, kept(10)), ["b"]);
        assert_eq!((l.get("b"), l.len()), (None, 2));
        // Three entries and 110 bytes: the oldest (a) goes.
        assert_eq!(l.insert("d", 4, kept(90)), ["a"]);
        assert_eq!(l.bytes(), 100);
        // One model above the bound alone still loads.
        assert_eq!(l.insert("e", 5, kept(500)).len(), 2);
        assert_eq!((l.len(), l.get("e")), (1, Some(5)));
    }

    #[test]
    fn working_memory_counts_once_for_the_largest() {
        let mut l = Lru::new(10, 100);
        assert!(l.insert("a", 1, Cost { kept: 20, working: 30 }).is_empty());
        assert!(l.insert("b", 2, Cost { kept: 20, working: 40 }).is_empty());
        assert_eq!(l.bytes(), 20 + 20 + 40);
        // 20 more kept: 100 in all, still within the bound.
        assert!(l.insert("c", 3, Cost { kept: 20, working: 10 }).is_empty());
        assert_eq!(l.bytes(), 100);
        // A larger working part pushes the oldest out.
        assert_eq!(l.insert("d", 4, Cost { kept: 10, working: 50 }), ["a"]);
        assert_eq!(l.bytes(), 20 + 20 + 10 + 50);
    }

    #[test]
    fn peak_resident_memory_is_measured_from_a_reset() {
        reset_peak_resident();
        let before = resident_bytes();
        // Touch 64 MB, then free it: the peak remembers it.
        let v = vec![1u8; 64 << 20];
        assert_eq!(v.iter().step_by(4096).map(|&b| b as usize).sum::<usize>(), 16384);
        drop(v);
        assert!(peak_resident_bytes() >= before + (60 << 20), "peak not measured");
    }
}
