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

/// The item being sifted, taken out of the slice, and the index of the slot it left (the
/// "hole"). Moving other items into the hole instead of swapping makes the same list as
/// `_heapqmodule.c`'s swaps: wherever the sift stops (also on an error from `lt`, or a
/// panic), dropping the hole writes the item into the slot the swaps would have left it in.
struct Hole<'a, T> {
    data: &'a mut [T],
    elt: std::mem::ManuallyDrop<T>,
    pos: usize,
}

impl<'a, T> Hole<'a, T> {
    /// Takes the item at `pos` (which must be in bounds) out of `data`.
    #[inline]
    fn new(data: &'a mut [T], pos: usize) -> Self {
        assert!(pos < data.len());
        // SAFETY: `pos` is in bounds (checked above). The item is read out once; the slot it
        // leaves is only overwritten (never read or dropped) until `drop` fills it again.
        let elt = unsafe { std::ptr::read(data.as_ptr().add(pos)) };
        Hole {
            data,
            elt: std::mem::ManuallyDrop::new(elt),
            pos,
        }
    }

    #[inline]
    fn element(&self) -> &T {
        &self.elt
    }

    /// The item at `index`, which must be in bounds and not the hole.
    #[inline]
    fn get(&self, index: usize) -> &T {
        debug_assert!(index != self.pos && index < self.data.len());
        // SAFETY: callers pass only in-bounds indices other than the hole's (the item at the
        // hole's slot has been moved out and must not be read).
        unsafe { self.data.get_unchecked(index) }
    }

    /// Moves the item at `index` into the hole; the hole moves to `index`.
    #[inline]
    fn move_to(&mut self, index: usize) {
        debug_assert!(index != self.pos && index < self.data.len());
        // SAFETY: both indices are in bounds and distinct (callers pass a parent or a child
        // of `pos`); the hole's slot holds no live item, so the copy neither leaks nor
        // duplicates one: after it, the slot at `index` is the hole.
        unsafe {
            let ptr = self.data.as_mut_ptr();
            std::ptr::copy_nonoverlapping(ptr.add(index), ptr.add(self.pos), 1);
        }
        self.pos = index;
    }
}

impl<T> Drop for Hole<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the hole's slot is in bounds and holds no live item; the item is written
        // back exactly once (`elt` is never used again).
        unsafe {
            let pos = self.pos;
            std::ptr::copy_nonoverlapping(&*self.elt, self.data.as_mut_ptr().add(pos), 1);
        }
    }
}

/// `_heapqmodule.c`'s `siftdown`: moves the item at `pos` towards `startpos` while it is
/// less than its parent.
#[inline]
fn siftdown<T, E>(
    arr: &mut [T],
    startpos: usize,
    pos: usize,
    lt: &mut impl FnMut(&T, &T) -> Result<bool, E>,
) -> Result<(), E> {
    // The first step without a hole: most pushes (deadlines mostly increasing) stop there.
    if pos <= startpos {
        return Ok(());
    }
    let parentpos = (pos - 1) >> 1;
    if !lt(&arr[pos], &arr[parentpos])? {
        return Ok(());
    }
    let mut hole = Hole::new(arr, pos);
    hole.move_to(parentpos);
    siftdown_hole(&mut hole, startpos, lt)
}

#[inline]
fn siftdown_hole<T, E>(
    hole: &mut Hole<'_, T>,
    startpos: usize,
    lt: &mut impl FnMut(&T, &T) -> Result<bool, E>,
) -> Result<(), E> {
    while hole.pos > startpos {
        let parentpos = (hole.pos - 1) >> 1;
        if !lt(hole.element(), hole.get(parentpos))? {
            break;
        }
        hole.move_to(parentpos);
    }
    Ok(())
}

/// `_heapqmodule.c`'s `siftup`: moves the smaller child up (the right one unless
/// `left < right`) until `pos` is a leaf, then sifts the item back up from there.
#[inline]
fn siftup<T, E>(
    arr: &mut [T],
    pos: usize,
    lt: &mut impl FnMut(&T, &T) -> Result<bool, E>,
) -> Result<(), E> {
    let endpos = arr.len();
    let startpos = pos;
    let limit = endpos >> 1;
    let mut hole = Hole::new(arr, pos);
    while hole.pos < limit {
        let mut childpos = 2 * hole.pos + 1;
        if childpos + 1 < endpos && !lt(hole.get(childpos), hole.get(childpos + 1))? {
            childpos += 1;
        }
        hole.move_to(childpos);
    }
    siftdown_hole(&mut hole, startpos, lt)
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
