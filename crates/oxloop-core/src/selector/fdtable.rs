//! A map from fd to per-fd data, stored densely (indexed by fd number, like
//! libuv's watcher array): lookups on the hot path are one bounds check.

use std::os::fd::RawFd;

pub(crate) struct FdTable<V> {
    slots: Vec<Option<V>>,
}

impl<V> FdTable<V> {
    pub(crate) const fn new() -> Self {
        FdTable { slots: Vec::new() }
    }

    fn index(fd: RawFd) -> Option<usize> {
        usize::try_from(fd).ok()
    }

    pub(crate) fn get(&self, fd: RawFd) -> Option<&V> {
        self.slots.get(Self::index(fd)?)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, fd: RawFd) -> Option<&mut V> {
        self.slots.get_mut(Self::index(fd)?)?.as_mut()
    }

    pub(crate) fn contains(&self, fd: RawFd) -> bool {
        self.get(fd).is_some()
    }

    /// Sets the entry for `fd`, returning the previous one.
    ///
    /// `fd` must be non-negative: callers insert only fds the kernel (or
    /// `fcntl`) has just accepted.
    pub(crate) fn insert(&mut self, fd: RawFd, value: V) -> Option<V> {
        let i = Self::index(fd).expect("FdTable::insert: negative fd");
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i].replace(value)
    }

    pub(crate) fn remove(&mut self, fd: RawFd) -> Option<V> {
        let i = Self::index(fd)?;
        let old = self.slots.get_mut(i)?.take();
        // Keep the vector short when the highest fds go away.
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        old
    }

    /// One past the highest registered fd (0 if empty).
    #[allow(dead_code)] // used by the select backend only
    pub(crate) fn end(&self) -> RawFd {
        self.slots.len() as RawFd
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for FdTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.slots
                    .iter()
                    .enumerate()
                    .filter_map(|(fd, v)| Some((fd, v.as_ref()?))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basics() {
        let mut t = FdTable::new();
        assert!(t.get(-1).is_none());
        assert!(t.get(3).is_none());
        assert_eq!(t.insert(3, "a"), None);
        assert_eq!(t.insert(3, "b"), Some("a"));
        t.insert(10, "c");
        assert_eq!(t.end(), 11);
        assert!(t.contains(3));
        *t.get_mut(10).unwrap() = "d";
        assert_eq!(t.remove(10), Some("d"));
        assert_eq!(t.end(), 4);
        assert_eq!(t.remove(10), None);
        assert_eq!(t.remove(-5), None);
        assert_eq!(t.remove(3), Some("b"));
        assert_eq!(t.end(), 0);
    }
}
