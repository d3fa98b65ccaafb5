//! `TimerHeap`: the same list, in the same order, as CPython's `heapq` for the same operations.
//!
//! The reference is a line-by-line port of `Lib/heapq.py` (`heappush`, `heappop`, `heapify`,
//! `_siftdown`, `_siftup`: the pure-Python module, which moves items through a "hole" where the
//! C module swaps; both make the same comparisons and leave the same list).

use std::convert::Infallible;

use oxloop_core::timers::TimerHeap;

type Item = (f64, u32);

/// `when < when` as Python compares floats (NaN: false).
fn lt(a: &Item, b: &Item) -> Result<bool, Infallible> {
    Ok(a.0 < b.0)
}

/// `Lib/heapq.py`, ported as written.
mod reference {
    use super::Item;

    fn less(a: &Item, b: &Item) -> bool {
        a.0 < b.0
    }

    pub fn heappush(heap: &mut Vec<Item>, item: Item) {
        heap.push(item);
        let n = heap.len() - 1;
        siftdown(heap, 0, n);
    }

    pub fn heappop(heap: &mut Vec<Item>) -> Option<Item> {
        let lastelt = heap.pop()?;
        if !heap.is_empty() {
            let returnitem = heap[0];
            heap[0] = lastelt;
            siftup(heap, 0);
            return Some(returnitem);
        }
        Some(lastelt)
    }

    pub fn heapify(x: &mut [Item]) {
        for i in (0..x.len() / 2).rev() {
            siftup(x, i);
        }
    }

    fn siftdown(heap: &mut [Item], startpos: usize, mut pos: usize) {
        let newitem = heap[pos];
        while pos > startpos {
            let parentpos = (pos - 1) >> 1;
            let parent = heap[parentpos];
            if less(&newitem, &parent) {
                heap[pos] = parent;
                pos = parentpos;
                continue;
            }
            break;
        }
        heap[pos] = newitem;
    }

    fn siftup(heap: &mut [Item], mut pos: usize) {
        let endpos = heap.len();
        let startpos = pos;
        let newitem = heap[pos];
        let mut childpos = 2 * pos + 1;
        while childpos < endpos {
            let rightpos = childpos + 1;
            if rightpos < endpos && !less(&heap[childpos], &heap[rightpos]) {
                childpos = rightpos;
            }
            heap[pos] = heap[childpos];
            pos = childpos;
            childpos = 2 * pos + 1;
        }
        heap[pos] = newitem;
        siftdown(heap, startpos, pos);
    }
}

/// xorshift64*: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Deadlines with many ties, signed zeros, NaNs and infinities.
    fn when(&mut self) -> f64 {
        match self.below(20) {
            0 => f64::NAN,
            1 => -f64::NAN,
            2 => f64::INFINITY,
            3 => f64::NEG_INFINITY,
            4 => -0.0,
            5 => 0.0,
            6..=12 => self.below(8) as f64,
            _ => (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 100.0 - 50.0,
        }
    }
}

fn bits(v: &[Item]) -> Vec<(u64, u32)> {
    v.iter().map(|(w, i)| (w.to_bits(), *i)).collect()
}

#[test]
fn equal_deadlines_pop_in_heapq_order() {
    // asyncio: eight call_at(when, out.append, i) with one `when`, then one _run_once.
    let mut h = TimerHeap::new();
    for i in 0..8 {
        h.push((1.0, i), lt).unwrap();
    }
    let order: Vec<u32> = std::iter::from_fn(|| h.pop(lt).unwrap())
        .map(|(_, i)| i)
        .collect();
    assert_eq!(order, [0, 2, 6, 5, 7, 4, 1, 3]);
}

#[test]
fn nan_is_never_less() {
    // NaN < x and x < NaN are both false: a NaN root stays the root.
    let mut h = TimerHeap::new();
    h.push((f64::NAN, 0), lt).unwrap();
    h.push((1.0, 1), lt).unwrap();
    h.push((-1.0, 2), lt).unwrap();
    assert!(h.peek().unwrap().0.is_nan());
    assert_eq!(h.pop(lt).unwrap().unwrap().1, 0);
}

#[test]
fn random_operations_match_heapq() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut h = TimerHeap::new();
        let mut r: Vec<Item> = Vec::new();
        let mut seq = 0u32;
        let ops = 1 + rng.below(if round % 10 == 0 { 6000 } else { 300 });
        for _ in 0..ops {
            match rng.below(10) {
                0..=5 => {
                    let item = (rng.when(), seq);
                    seq += 1;
                    h.push(item, lt).unwrap();
                    reference::heappush(&mut r, item);
                }
                6..=8 => {
                    let a = h.pop(lt).unwrap();
                    let b = reference::heappop(&mut r);
                    assert_eq!(
                        a.map(|x| (x.0.to_bits(), x.1)),
                        b.map(|x| (x.0.to_bits(), x.1))
                    );
                }
                _ => {
                    // asyncio's compaction: keep some items in list order, then heapify.
                    let m = 2 + rng.below(4) as u32;
                    h.retain(|x| x.1 % m != 0);
                    r.retain(|x| x.1 % m != 0);
                    h.heapify(lt).unwrap();
                    reference::heapify(&mut r);
                }
            }
            assert_eq!(bits(h.as_slice()), bits(&r), "round {round}");
        }
    }
}

#[test]
fn heapify_large_matches_plain_heapify() {
    // Above 2500 items CPython switches to its cache-friendly order of the same sifts.
    let mut rng = Rng(42);
    for n in [2501usize, 2502, 3000, 4095, 4096, 4097, 10_000] {
        let items: Vec<Item> = (0..n as u32).map(|i| (rng.when(), i)).collect();
        let mut h = TimerHeap::new();
        for it in &items {
            // Build the list unsorted (push then retain-all keeps list order).
            h.push(*it, |_: &Item, _: &Item| Ok::<bool, Infallible>(false))
                .unwrap();
        }
        assert_eq!(bits(h.as_slice()), bits(&items));
        h.heapify(lt).unwrap();
        let mut r = items.clone();
        reference::heapify(&mut r);
        assert_eq!(bits(h.as_slice()), bits(&r), "n = {n}");
    }
}

#[test]
fn failing_comparison_stops_where_heapq_stops() {
    // A comparison that fails on the third call: push keeps the item (partly sifted).
    let mut h = TimerHeap::new();
    for i in 0..7 {
        h.push((f64::from(7 - i), i), lt).unwrap();
    }
    let before = h.len();
    let mut calls = 0;
    let err = h.push((-1.0, 99), |a: &Item, b: &Item| {
        calls += 1;
        if calls == 2 {
            Err("boom")
        } else {
            Ok(a.0 < b.0)
        }
    });
    assert_eq!(err, Err("boom"));
    assert_eq!(h.len(), before + 1);
    assert!(h.iter().any(|x| x.1 == 99));
    // pop: the root is dropped, the rest stays.
    let root = h.peek().unwrap().1;
    let err = h.pop(|_: &Item, _: &Item| Err::<bool, _>("boom"));
    assert_eq!(err, Err("boom"));
    assert_eq!(h.len(), before);
    assert!(h.iter().all(|x| x.1 != root));
}

#[test]
fn empty_and_small() {
    let mut h: TimerHeap<Item> = TimerHeap::new();
    assert_eq!(h.pop(lt), Ok(None));
    assert!(h.peek().is_none());
    assert!(h.is_empty());
    h.heapify(lt).unwrap();
    h.push((1.0, 1), lt).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h.pop(lt), Ok(Some((1.0, 1))));
    let _ = TimerHeap::<()>::default();
}

#[test]
fn clear_drain_retain() {
    let mut h = TimerHeap::new();
    for i in 0..10u32 {
        h.push((f64::from(i), i), lt).unwrap();
    }
    let listed: Vec<u32> = h.iter().map(|x| x.1).collect();
    h.retain(|x| x.1 % 2 == 0);
    assert_eq!(
        h.iter().map(|x| x.1).collect::<Vec<_>>(),
        listed
            .iter()
            .copied()
            .filter(|i| i % 2 == 0)
            .collect::<Vec<_>>()
    );
    let drained = h.drain();
    assert_eq!(drained.len(), 5);
    assert!(h.is_empty());
    h.push((0.0, 0), lt).unwrap();
    h.clear();
    assert!(h.is_empty());
}
