//! `TimerHeap`: ordering by `when`, FIFO among equal deadlines, retain, drain.

use oxloop_core::timers::TimerHeap;

fn pop_all<T>(h: &mut TimerHeap<T>) -> Vec<(f64, T)> {
    std::iter::from_fn(|| h.pop()).collect()
}

#[test]
fn orders_by_when() {
    let mut h = TimerHeap::new();
    for (i, when) in [5.0, 1.0, 3.0, -2.0, 4.5, 0.0, 1e9, 2.25]
        .into_iter()
        .enumerate()
    {
        h.push(when, i);
    }
    assert_eq!(h.len(), 8);
    assert_eq!(h.peek_when(), Some(-2.0));
    assert_eq!(h.peek(), Some(&3));
    let whens: Vec<f64> = pop_all(&mut h).into_iter().map(|(w, _)| w).collect();
    assert_eq!(whens, [-2.0, 0.0, 1.0, 2.25, 3.0, 4.5, 5.0, 1e9]);
    assert!(h.is_empty());
}

#[test]
fn equal_when_pops_in_push_order() {
    let mut h = TimerHeap::new();
    let mut seqs = Vec::new();
    for i in 0..100 {
        // Interleave two deadlines; each must stay FIFO.
        let when = if i % 2 == 0 { 10.0 } else { 5.0 };
        seqs.push(h.push(when, i));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq increases");
    let items: Vec<i32> = pop_all(&mut h).into_iter().map(|(_, i)| i).collect();
    let odd = (0..100).filter(|i| i % 2 == 1);
    let even = (0..100).filter(|i| i % 2 == 0);
    assert_eq!(items, odd.chain(even).collect::<Vec<_>>());
}

#[test]
fn pop_and_peek_on_empty() {
    let mut h: TimerHeap<String> = TimerHeap::new();
    assert_eq!(h.pop(), None);
    assert_eq!(h.peek(), None);
    assert_eq!(h.peek_when(), None);
    assert_eq!(h.len(), 0);
    assert!(h.is_empty());
    assert!(h.drain().is_empty());
    let _ = TimerHeap::<()>::default();
}

#[test]
fn retain_compacts_and_keeps_order() {
    let mut h = TimerHeap::new();
    for i in 0..50u32 {
        h.push(f64::from(i % 7), i);
    }
    h.retain(|i| i % 3 != 0);
    assert_eq!(h.len(), 50 - 17);
    let got = pop_all(&mut h);
    let mut want: Vec<(f64, u32)> = (0..50u32)
        .filter(|i| i % 3 != 0)
        .map(|i| (f64::from(i % 7), i))
        .collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0)); // stable: FIFO within equal when
    assert_eq!(got, want);
}

#[test]
fn clear_and_drain() {
    let mut h = TimerHeap::new();
    for i in 0..10 {
        h.push(f64::from(i), Box::new(i)); // T needs no Copy/Ord/etc.
    }
    let mut seen: Vec<i32> = h.iter().map(|b| **b).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    let mut drained: Vec<i32> = h.drain().into_iter().map(|b| *b).collect();
    drained.sort_unstable();
    assert_eq!(drained, (0..10).collect::<Vec<_>>());
    assert!(h.is_empty());
    h.push(1.0, Box::new(1));
    h.clear();
    assert!(h.is_empty());
    // Sequence numbers keep increasing across clear().
    assert_eq!(h.push(0.0, Box::new(0)), 11);
}

#[test]
fn total_cmp_semantics() {
    let mut h = TimerHeap::new();
    h.push(f64::INFINITY, "inf");
    h.push(0.0, "zero");
    h.push(-0.0, "neg-zero");
    h.push(f64::NEG_INFINITY, "-inf");
    let items: Vec<&str> = pop_all(&mut h).into_iter().map(|(_, s)| s).collect();
    assert_eq!(items, ["-inf", "neg-zero", "zero", "inf"]);
}

#[test]
fn order_is_total_cmp_and_whens_round_trip() {
    let vals = [
        3.5,
        -0.0,
        0.0,
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1e-300,
        1e-300,
        f64::MIN_POSITIVE,
        -5e-324,
        5e-324,
        f64::MAX,
        f64::MIN,
        -2.5,
        1234.000001,
    ];
    let mut h = TimerHeap::new();
    for (i, w) in vals.iter().enumerate() {
        h.push(*w, i);
    }
    let mut want: Vec<(f64, usize)> = vals.iter().copied().zip(0..).collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let got = pop_all(&mut h);
    let bits = |v: &[(f64, usize)]| v.iter().map(|(w, i)| (w.to_bits(), *i)).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want));
}
