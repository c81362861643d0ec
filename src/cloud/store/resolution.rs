//! History for a key limited to a resolution (Secure Sharing's "what resolution of
//! data history can be viewed"). A key whose finest resolution is R seconds learns the
//! averages (and counts) of the R-second buckets aligned to the epoch and nothing
//! finer: windows are widened to whole buckets (a window around one sample would
//! otherwise return it raw), and a coarser bucket's minimum and maximum are those of
//! the R-second averages inside it, never of raw samples.

use super::Bucket;

/// What a limited history read covers: whole buckets only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_ns: i64,
    /// Inclusive: the last nanosecond of the last bucket.
    pub to_ns: i64,
    /// The bucket asked for, rounded up to a multiple of the floor.
    pub bucket_ns: i64,
    /// The key's finest resolution.
    pub floor_ns: i64,
}

impl Window {
    /// The whole buckets of `bucket_ns` (rounded up to a multiple of `floor_ns`, both
    /// positive) that `from_ns..=to_ns` touches, at most `limit` of them, none before
    /// the epoch and none that has not ended by `now_ns`. `None` for an empty window.
    pub fn new(
        from_ns: i64,
        to_ns: i64,
        bucket_ns: i64,
        floor_ns: i64,
        limit: usize,
        now_ns: i64,
    ) -> Option<Self> {
        let floor_ns = floor_ns.max(1);
        let bucket_ns = bucket_ns
            .max(floor_ns)
            .checked_add(floor_ns - 1)?
            .checked_div(floor_ns)?
            .checked_mul(floor_ns)?;
        let (from_ns, to_ns) = (from_ns.max(0), to_ns.max(0));
        let start = from_ns - from_ns % bucket_ns;
        // Finished buckets only: the one still filling would give each new sample away
        // by the change in its average.
        let now_ns = now_ns.max(0);
        let last = (to_ns - to_ns % bucket_ns).min(now_ns - now_ns % bucket_ns - bucket_ns);
        let cap = start.saturating_add((limit.max(1) as i64 - 1).saturating_mul(bucket_ns));
        let end = last.min(cap).saturating_add(bucket_ns - 1);
        (start <= end).then_some(Window {
            from_ns: start,
            to_ns: end,
            bucket_ns,
            floor_ns,
        })
    }
}

/// Folds floor-sized buckets (in time order) into `bucket_ns` buckets: the average of
/// all their samples, the least and greatest of their averages, the count.
pub fn roll_up(fine: &[Bucket], bucket_ns: i64) -> Vec<Bucket> {
    let mut out: Vec<(Bucket, f64)> = Vec::new();
    for b in fine {
        let ts_ns = b.ts_ns - b.ts_ns.rem_euclid(bucket_ns);
        let weighted = b.avg * b.count as f64;
        match out.last_mut() {
            Some((o, sum)) if o.ts_ns == ts_ns => {
                *sum += weighted;
                o.count += b.count;
                o.min = o.min.min(b.avg);
                o.max = o.max.max(b.avg);
            }
            _ => out.push((
                Bucket {
                    ts_ns,
                    avg: b.avg,
                    min: b.avg,
                    max: b.avg,
                    count: b.count,
                },
                weighted,
            )),
        }
    }
    out.into_iter()
        .map(|(mut b, sum)| {
            if b.count > 0 {
                b.avg = sum / b.count as f64;
            }
            b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    /// Long after every window of these tests.
    const NOW: i64 = 1_000_000 * 3_600 * S;

    fn b(ts_s: i64, avg: f64, count: u64) -> Bucket {
        Bucket {
            ts_ns: ts_s * S,
            avg,
            min: f64::NAN,
            max: f64::NAN,
            count,
        }
    }

    #[test]
    fn a_window_around_one_sample_covers_its_whole_bucket() {
        let w = Window::new(7_200 * S + 5, 7_200 * S + 6, 3_600 * S, 3_600 * S, 100, NOW).unwrap();
        assert_eq!((w.from_ns, w.to_ns), (7_200 * S, 10_800 * S - 1));
        // A bucket finer than the floor is the floor; one between is rounded up.
        let w = Window::new(0, 1, 10 * S, 3_600 * S, 100, NOW).unwrap();
        assert_eq!(w.bucket_ns, 3_600 * S);
        let w = Window::new(0, 1, 5_000 * S, 3_600 * S, 100, NOW).unwrap();
        assert_eq!(w.bucket_ns, 7_200 * S);
    }

    #[test]
    fn the_limit_cuts_at_a_bucket_boundary() {
        let w = Window::new(0, 100 * 3_600 * S, 3_600 * S, 3_600 * S, 3, NOW).unwrap();
        assert_eq!((w.from_ns, w.to_ns), (0, 3 * 3_600 * S - 1));
        assert!(Window::new(-10 * S, -S, S, S, 10, NOW).is_some_and(|w| w.from_ns == 0));
        // At the end of time nothing overflows (and the bucket holding `now` is unfinished).
        assert!(Window::new(i64::MAX - 1, i64::MAX, S, S, 10, i64::MAX).is_none());
        // The bucket still filling is left out; a window of it alone holds nothing.
        let w = Window::new(0, NOW, 3_600 * S, 3_600 * S, 100_000_000, NOW + 5).unwrap();
        assert_eq!(w.to_ns, NOW - 1);
        assert!(Window::new(NOW, NOW + 5, 3_600 * S, 3_600 * S, 10, NOW + 5).is_none());
    }

    #[test]
    fn coarse_buckets_show_the_fine_averages_never_a_raw_extreme() {
        // Two hourly buckets (averages 10 of 3 samples, 40 of 1) in one two-hour bucket.
        let fine = [b(0, 10.0, 3), b(3_600, 40.0, 1), b(7_200, 5.0, 2)];
        let coarse = roll_up(&fine, 7_200 * S);
        assert_eq!(coarse.len(), 2);
        assert_eq!(
            (coarse[0].min, coarse[0].max, coarse[0].count),
            (10.0, 40.0, 4)
        );
        assert_eq!(coarse[0].avg, 17.5);
        assert_eq!(
            (coarse[1].ts_ns, coarse[1].avg, coarse[1].min),
            (7_200 * S, 5.0, 5.0)
        );
        // At the floor itself, min = max = avg.
        let same = roll_up(&fine, 3_600 * S);
        assert!(same.iter().all(|c| c.min == c.avg && c.max == c.avg));
    }
}
