//! Small helpers shared by `loadgen` and `native-echo`: argument parsing and a latency
//! summary (exact percentiles plus a log-linear histogram), written as JSON by hand so the
//! tools depend on tokio alone.

use std::collections::HashMap;
use std::fmt::Write as _;

/// `--key value` / `--flag` arguments after a positional mode.
pub struct Args {
    pub mode: String,
    map: HashMap<String, String>,
}

impl Args {
    pub fn parse(usage: &str) -> Args {
        let mut it = std::env::args()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .peekable();
        let mut mode = String::new();
        let mut map = HashMap::new();
        while let Some(a) = it.next() {
            if a == "-h" || a == "--help" {
                eprintln!("{usage}");
                std::process::exit(0);
            }
            if let Some(key) = a.strip_prefix("--") {
                if let Some((k, v)) = key.split_once('=') {
                    map.insert(k.to_string(), v.to_string());
                } else {
                    // A flag takes the next argument unless that is another option.
                    let v = match it.peek() {
                        Some(n) if !n.starts_with("--") => it.next().unwrap_or_default(),
                        _ => "1".to_string(),
                    };
                    map.insert(key.to_string(), v);
                }
            } else if mode.is_empty() {
                mode = a;
            } else {
                die(&format!("unexpected argument {a:?}\n{usage}"));
            }
        }
        Args { mode, map }
    }

    pub fn str(&self, key: &str, default: &str) -> String {
        self.map
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    pub fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.map.get(key) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(&format!("--{key}: cannot parse {v:?}"))),
        }
    }

    pub fn flag(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
}

pub fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

/// Sub-buckets per power of two in the emitted histogram (relative bucket width <= 1/8).
const SUB: u32 = 8;

fn bucket_of(ns: u64) -> u32 {
    let v = ns.max(1);
    let exp = 63 - v.leading_zeros();
    if exp < 3 {
        return v as u32; // 1..7 ns: exact
    }
    let frac = ((v >> (exp - 3)) & (SUB as u64 - 1)) as u32;
    exp * SUB + frac
}

fn bucket_low(b: u32) -> u64 {
    if b < 3 * SUB {
        return b as u64;
    }
    let exp = b / SUB;
    let frac = (b % SUB) as u64;
    (SUB as u64 + frac) << (exp - 3)
}

/// Percentiles (exact, from all samples) and a compact histogram, as a JSON object.
pub fn latency_json(samples: &mut [u64]) -> String {
    samples.sort_unstable();
    let n = samples.len();
    let pct = |p: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        let idx = ((p / 100.0) * (n as f64 - 1.0)).round() as usize;
        samples[idx.min(n - 1)] as f64 / 1000.0
    };
    let mean = if n == 0 {
        0.0
    } else {
        samples.iter().map(|&x| x as f64).sum::<f64>() / n as f64 / 1000.0
    };
    let mut hist: Vec<(u32, u64)> = Vec::new();
    for &s in samples.iter() {
        let b = bucket_of(s);
        match hist.last_mut() {
            Some((lb, c)) if *lb == b => *c += 1,
            _ => hist.push((b, 1)),
        }
    }
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"unit\":\"us\",\"count\":{n},\"mean\":{mean:.3},\"min\":{:.3},\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3},\"histogram_ns\":[",
        pct(0.0),
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        pct(100.0)
    );
    for (i, (b, c)) in hist.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "[{},{}]", bucket_low(*b), c);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [1u64, 5, 7, 8, 9, 15, 16, 100, 1000, 123_456, 10_000_000_000] {
            let b = bucket_of(v);
            assert!(b >= last);
            last = b;
            let lo = bucket_low(b);
            assert!(lo <= v, "{v} {lo}");
            assert!((v - lo) as f64 <= v as f64 / 8.0 + 1.0, "{v} {lo}");
        }
    }

    #[test]
    fn percentiles() {
        let mut s: Vec<u64> = (1..=1000).map(|x| x * 1000).collect();
        let j = latency_json(&mut s);
        assert!(
            j.contains("\"p50\":501.000") || j.contains("\"p50\":500.000"),
            "{j}"
        );
        assert!(j.contains("\"max\":1000.000"));
    }
}
