//! A min-heap of timers ordered by `(when, seq)`.
//!
//! `when` is a deadline in [`clock::monotonic`](crate::clock::monotonic)
//! seconds, compared with [`f64::total_cmp`]; `seq` is a counter assigned by
//! [`TimerHeap::push`], so timers with equal deadlines pop in push order
//! (asyncio relies on this FIFO order). The item type has no trait bounds.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Entry<T> {
    /// `when` as an unsigned integer with the same order as [`f64::total_cmp`] (see
    /// [`order_key`]): comparing two entries is then one 128-bit integer comparison.
    key: u64,
    seq: u64,
    item: T,
}

/// Maps an `f64` to a `u64` whose unsigned order is IEEE 754 totalOrder, the order of
/// [`f64::total_cmp`]: negative numbers (sign bit set) get every bit flipped, the others get
/// the sign bit set. [`from_order_key`] is its inverse.
#[inline]
fn order_key(when: f64) -> u64 {
    let bits = when.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

#[inline]
fn from_order_key(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    })
}

impl<T> Entry<T> {
    #[inline]
    fn rank(&self) -> u128 {
        (u128::from(self.key) << 64) | u128::from(self.seq)
    }

    #[inline]
    fn key_cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

// `BinaryHeap` is a max-heap: order entries by reversed key so the earliest
// `(when, seq)` is on top.
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key_cmp(self)
    }
}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T> Eq for Entry<T> {}

/// Min-heap of `(when, item)` pairs; see the [module docs](self).
pub struct TimerHeap<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerHeap<T> {
    /// An empty heap.
    pub fn new() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }

    /// Adds `item` due at `when`; returns its sequence number (increasing
    /// with every push, never reused by this heap).
    pub fn push(&mut self, when: f64, item: T) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry {
            key: order_key(when),
            seq,
            item,
        });
        seq
    }

    /// Deadline of the earliest timer.
    pub fn peek_when(&self) -> Option<f64> {
        self.heap.peek().map(|e| from_order_key(e.key))
    }

    /// The earliest timer's item.
    pub fn peek(&self) -> Option<&T> {
        self.heap.peek().map(|e| &e.item)
    }

    /// Removes and returns the earliest timer.
    pub fn pop(&mut self) -> Option<(f64, T)> {
        self.heap.pop().map(|e| (from_order_key(e.key), e.item))
    }

    /// Number of timers.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether there are no timers.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Keeps only the timers whose item satisfies `f`, in O(n) (used to
    /// compact cancelled timers). Order among the kept ones is unchanged.
    pub fn retain<F: FnMut(&T) -> bool>(&mut self, mut f: F) {
        self.heap.retain(|e| f(&e.item));
    }

    /// Removes all timers (the sequence counter keeps counting).
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// Removes all timers and returns their items, in unspecified order.
    pub fn drain(&mut self) -> Vec<T> {
        self.heap.drain().map(|e| e.item).collect()
    }
}

impl<T> std::fmt::Debug for TimerHeap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerHeap")
            .field("len", &self.heap.len())
            .field("next_when", &self.peek_when())
            .finish()
    }
}

impl<T> TimerHeap<T> {
    /// Iterates over the items in no particular order (for GC traversal and snapshots).
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.item)
    }
}
