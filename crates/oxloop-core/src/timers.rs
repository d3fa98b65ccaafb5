//! A binary min-heap that is CPython's `heapq` step for step.
//!
//! asyncio keeps its timers in a list managed by `heapq.heappush` / `heappop` / `heapify`
//! and compares them with `TimerHandle.__lt__` (`self._when < other._when`). Timers with equal
//! deadlines (or deadlines that do not compare, such as NaN) therefore come out in the order
//! `heapq`'s sift algorithm leaves them, not in push order. [`TimerHeap`] reproduces that
//! algorithm exactly (the swaps and comparisons of `Modules/_heapqmodule.c`: `siftdown`,
//! `siftup`, `heappush`, `heappop`, `heapify` with its cache-friendly variant above 2500
//! items), so the same sequence of operations with the same comparison results leaves the
//! same list, in the same order, as asyncio's `loop._scheduled`.
//!
//! The comparison is the caller's: every operation takes `lt(a, b)`, "a < b" as Python would
//! answer it, which may fail (a Python comparison raising). On a failure the operation stops
//! where `heapq` stops, leaving the items where `heapq` leaves them (every step is a swap, so
//! the list always holds each item exactly once; `pop` drops the item it was returning, as
//! `heappop` does). The item type has no trait bounds.

/// A min-heap in `heapq`'s list layout; see the [module docs](self).
pub struct TimerHeap<T> {
    items: Vec<T>,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerHeap<T> {
    /// An empty heap.
    pub const fn new() -> Self {
        TimerHeap { items: Vec::new() }
    }

    /// `heapq.heappush`: appends `item`, then sifts it towards the root. On an error from
    /// `lt` the item stays in the heap where the sift left it (as with `heappush`).
    pub fn push<E>(
        &mut self,
        item: T,
        mut lt: impl FnMut(&T, &T) -> Result<bool, E>,
    ) -> Result<(), E> {
        self.items.push(item);
        let pos = self.items.len() - 1;
        siftdown(&mut self.items, 0, pos, &mut lt)
    }

    /// `heapq.heappop`: removes and returns the root (the last item takes its place and is
    /// sifted). On an error from `lt` the root is gone (dropped) and the heap keeps the rest,
    /// as `heappop` does.
    pub fn pop<E>(
        &mut self,
        mut lt: impl FnMut(&T, &T) -> Result<bool, E>,
    ) -> Result<Option<T>, E> {
        let Some(last) = self.items.pop() else {
            return Ok(None);
        };
        if self.items.is_empty() {
            return Ok(Some(last));
        }
        let root = std::mem::replace(&mut self.items[0], last);
        siftup(&mut self.items, 0, &mut lt)?;
        Ok(Some(root))
    }

    /// `heapq.heapify`: rearranges the items (in their current list order) into a heap.
    pub fn heapify<E>(&mut self, mut lt: impl FnMut(&T, &T) -> Result<bool, E>) -> Result<(), E> {
        let n = self.items.len();
        if n > 2500 {
            return cache_friendly_heapify(&mut self.items, &mut lt);
        }
        for i in (0..n / 2).rev() {
            siftup(&mut self.items, i, &mut lt)?;
        }
        Ok(())
    }

    /// The root: the earliest timer.
    pub fn peek(&self) -> Option<&T> {
        self.items.first()
    }

    /// The items in list order (asyncio's `loop._scheduled`).
    pub fn as_slice(&self) -> &[T] {
        &self.items
    }

    /// Iterates over the items in list order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Keeps only the items for which `f` is true, in list order (asyncio's
    /// `[h for h in self._scheduled if not h._cancelled]`); the result is usually not a heap
    /// until [`heapify`](Self::heapify) is called.
    pub fn retain<F: FnMut(&T) -> bool>(&mut self, f: F) {
        self.items.retain(f);
    }

    /// Removes all items.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Removes all items and returns them in list order.
    pub fn drain(&mut self) -> Vec<T> {
        std::mem::take(&mut self.items)
    }
}

impl<T> std::fmt::Debug for TimerHeap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerHeap")
            .field("len", &self.items.len())
            .finish()
    }
}

/// `_heapqmodule.c`'s `siftdown`: moves the item at `pos` towards `startpos` while it is
/// less than its parent, one swap per step.
#[inline]
fn siftdown<T, E>(
    arr: &mut [T],
    startpos: usize,
    mut pos: usize,
    lt: &mut impl FnMut(&T, &T) -> Result<bool, E>,
) -> Result<(), E> {
    while pos > startpos {
        let parentpos = (pos - 1) >> 1;
        if !lt(&arr[pos], &arr[parentpos])? {
            break;
        }
        arr.swap(pos, parentpos);
        pos = parentpos;
    }
    Ok(())
}

/// `_heapqmodule.c`'s `siftup`: moves the smaller child up (the right one unless
/// `left < right`) until `pos` is a leaf, then [`siftdown`] from there.
#[inline]
fn siftup<T, E>(
    arr: &mut [T],
    mut pos: usize,
    lt: &mut impl FnMut(&T, &T) -> Result<bool, E>,
) -> Result<(), E> {
    let endpos = arr.len();
    let startpos = pos;
    let limit = endpos >> 1;
    while pos < limit {
        let mut childpos = 2 * pos + 1;
        if childpos + 1 < endpos && !lt(&arr[childpos], &arr[childpos + 1])? {
            childpos += 1;
        }
        arr.swap(childpos, pos);
        pos = childpos;
    }
    siftdown(arr, startpos, pos, lt)
}

/// `_heapqmodule.c`'s `keep_top_bit`: `n` with only its highest set bit (0 and 1 as they are).
fn keep_top_bit(mut n: usize) -> usize {
    let mut i = 0;
    while n > 1 {
        n >>= 1;
        i += 1;
    }
    n << i
}

/// `_heapqmodule.c`'s `cache_friendly_heapify` (used above 2500 items): the same heap as the
/// plain bottom-up loop, built in another order of the same sifts.
fn cache_friendly_heapify<T, E>(
    arr: &mut [T],
    lt: &mut impl FnMut(&T, &T) -> Result<bool, E>,
) -> Result<(), E> {
    let m = arr.len() >> 1; // index of the first childless node
    let leftmost = keep_top_bit(m + 1) - 1; // leftmost node in the row of m
    let mhalf = m >> 1; // parent of the first childless node
    let mut sift_run = |arr: &mut [T], i: usize| -> Result<(), E> {
        let mut j = i;
        loop {
            siftup(arr, j, lt)?;
            if j & 1 == 0 {
                return Ok(());
            }
            j >>= 1;
        }
    };
    for i in (mhalf..leftmost).rev() {
        sift_run(arr, i)?;
    }
    for i in (leftmost..m).rev() {
        sift_run(arr, i)?;
    }
    Ok(())
}
