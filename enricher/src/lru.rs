//! A map with a capacity that evicts its least recently used entry and counts each eviction:
//! every table of enricher state is one of these.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use telemetry::Counter;

#[derive(Debug)]
pub struct LruMap<K, V> {
    entries: HashMap<K, (V, u64)>,
    /// Use tick → key, oldest first.
    order: BTreeMap<u64, K>,
    tick: u64,
    capacity: usize,
    evictions: &'static Counter,
}

impl<K: Hash + Eq + Clone, V> LruMap<K, V> {
    /// A map of at most `capacity` entries (at least one), counting evictions in `evictions`.
    pub fn new(capacity: usize, evictions: &'static Counter) -> Self {
        LruMap {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            capacity: capacity.max(1),
            evictions,
        }
    }

    /// The entry for `key`, marked as most recently used; made with `make` (evicting the least
    /// recently used entry if the map is full) when absent. The flag is true when it was made.
    pub fn touch_or_insert_with<Q>(&mut self, key: &Q, make: impl FnOnce() -> V) -> (&mut V, bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.tick += 1;
        let tick = self.tick;
        let inserted = match self.entries.get_mut(key) {
            Some(entry) => {
                self.order.remove(&entry.1);
                entry.1 = tick;
                self.order.insert(tick, key.to_owned());
                false
            }
            None => {
                if self.entries.len() >= self.capacity {
                    if let Some((_, oldest)) = self.order.pop_first() {
                        self.entries.remove(oldest.borrow());
                        self.evictions.inc();
                    }
                }
                self.entries.insert(key.to_owned(), (make(), tick));
                self.order.insert(tick, key.to_owned());
                true
            }
        };
        let value = &mut self.entries.get_mut(key).expect("entry just touched").0;
        (value, inserted)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_goes_first_and_is_counted() {
        let evictions = telemetry::counter("lru_test_evictions_total", "test", &[]);
        let mut map: LruMap<String, u32> = LruMap::new(2, evictions);
        map.touch_or_insert_with("a", || 1);
        map.touch_or_insert_with("b", || 2);
        let (a, made) = map.touch_or_insert_with("a", || 0);
        assert_eq!((*a, made), (1, false));
        map.touch_or_insert_with("c", || 3);
        assert!(map.contains_key("a") && map.contains_key("c") && !map.contains_key("b"));
        assert_eq!(map.len(), 2);
        assert_eq!(evictions.get(), 1);
    }
}
