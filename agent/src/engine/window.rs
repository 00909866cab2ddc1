//! Window assignment: which windows a timestamp belongs to.
//!
//! Arithmetic is done in i128 because `ts - offset` may overflow i64 for absurd
//! payload timestamps; within about one window of `i64::MIN` or `i64::MAX` ms
//! (some 292 million years from 1970) the bounds saturate instead.

use super::config::WindowSpec;
use crate::reading::TimestampMs;

/// One window: the half-open event-time interval `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// Inclusive.
    pub start: TimestampMs,
    /// Exclusive.
    pub end: TimestampMs,
}

/// The windows one timestamp belongs to, in increasing order of end.
#[derive(Clone, Debug)]
pub struct Windows {
    next_start: i128,
    last_start: i128,
    slide: i128,
    size: i128,
    // Sessions: the first window is cut at this bound.
    cap: i128,
}

impl Iterator for Windows {
    type Item = Window;

    fn next(&mut self) -> Option<Window> {
        if self.next_start > self.last_start {
            return None;
        }
        let start = self.next_start;
        self.next_start += self.slide;
        Some(Window {
            start: saturate(start),
            end: saturate((start + self.size).min(self.cap)),
        })
    }
}

/// Start of the grid cell of width `width` (offset `offset`) containing `ts`.
fn align(ts: i128, offset: i64, width: i64) -> i128 {
    let width = width.max(1);
    // The hot path: i128 division is a library call, several times slower.
    if let Some(d) = i64::try_from(ts).ok().and_then(|t| t.checked_sub(offset)) {
        return ts - i128::from(d.rem_euclid(width));
    }
    ts - (ts - i128::from(offset)).rem_euclid(i128::from(width))
}

impl WindowSpec {
    /// The windows containing `ts`, in increasing order of end: one for
    /// tumbling windows, `ceil(size / slide)` for hopping windows, and for
    /// sessions the reading's own proto-session `[ts, min(ts + gap, cut))`,
    /// where `cut` is the next multiple of `max_length` (plus offset): the
    /// engine merges it with the key's sessions it touches.
    ///
    /// Negative timestamps work (the alignment uses the Euclidean remainder).
    pub fn assign(&self, ts: TimestampMs) -> Windows {
        let t = i128::from(ts);
        match *self {
            WindowSpec::Tumbling { size_ms, offset_ms } => {
                let start = align(t, offset_ms, size_ms);
                Windows {
                    next_start: start,
                    last_start: start,
                    slide: 1,
                    size: i128::from(size_ms.max(1)),
                    cap: i128::MAX,
                }
            }
            WindowSpec::Hopping {
                size_ms,
                slide_ms,
                offset_ms,
            } => {
                let (size, slide) = (i128::from(size_ms.max(1)), i128::from(slide_ms.max(1)));
                let last = align(t, offset_ms, slide_ms);
                // The earliest start s on the grid with s + size > t.
                let back = (last - t + size + slide - 1) / slide - 1;
                Windows {
                    next_start: last - back.max(0) * slide,
                    last_start: last,
                    slide,
                    size,
                    cap: i128::MAX,
                }
            }
            WindowSpec::Session {
                gap_ms,
                max_length_ms,
                offset_ms,
            } => Windows {
                next_start: t,
                last_start: t,
                slide: 1,
                size: i128::from(gap_ms.max(1)),
                cap: align(t, offset_ms, max_length_ms) + i128::from(max_length_ms.max(1)),
            },
        }
    }

    /// Sessions: the start of the `max_length` cell a window lies in; two
    /// sessions may merge only within one cell. Other kinds: `None`.
    pub fn session_cell(&self, start: TimestampMs) -> Option<TimestampMs> {
        match *self {
            WindowSpec::Session {
                max_length_ms,
                offset_ms,
                ..
            } => Some(saturate(align(i128::from(start), offset_ms, max_length_ms))),
            _ => None,
        }
    }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tumbling(size_ms: i64, offset_ms: i64) -> WindowSpec {
        WindowSpec::Tumbling { size_ms, offset_ms }
    }

    fn all(spec: &WindowSpec, ts: i64) -> Vec<(i64, i64)> {
        spec.assign(ts).map(|w| (w.start, w.end)).collect()
    }

    fn only(spec: &WindowSpec, ts: i64) -> (i64, i64) {
        let ws = all(spec, ts);
        assert_eq!(ws.len(), 1, "tumbling assigns exactly one window");
        ws[0]
    }

    #[test]
    fn windows_are_half_open_and_aligned_to_the_epoch() {
        let spec = tumbling(1000, 0);
        assert_eq!(only(&spec, 0), (0, 1000));
        assert_eq!(only(&spec, 999), (0, 1000));
        assert_eq!(only(&spec, 1000), (1000, 2000));
        assert_eq!(
            only(&spec, 1_700_000_000_123),
            (1_700_000_000_000, 1_700_000_001_000)
        );
    }

    #[test]
    fn negative_timestamps_fall_in_windows_that_contain_them() {
        let spec = tumbling(1000, 0);
        assert_eq!(only(&spec, -1), (-1000, 0));
        assert_eq!(only(&spec, -1000), (-1000, 0));
        assert_eq!(only(&spec, -1001), (-2000, -1000));
    }

    #[test]
    fn an_offset_shifts_the_window_grid() {
        let spec = tumbling(1000, 250);
        assert_eq!(only(&spec, 250), (250, 1250));
        assert_eq!(only(&spec, 249), (-750, 250));
        assert_eq!(only(&spec, 1249), (250, 1250));
        assert_eq!(only(&spec, -751), (-1750, -750));
    }

    #[test]
    fn timestamps_at_the_ends_of_the_range_saturate_instead_of_overflowing() {
        let spec = tumbling(1000, 500);
        let (start, end) = only(&spec, i64::MIN);
        assert_eq!(start, i64::MIN);
        assert!(end > i64::MIN);
        let (start, end) = only(&spec, i64::MAX);
        assert!(start > i64::MAX - 1000);
        assert_eq!(end, i64::MAX);
    }

    #[test]
    fn a_hopping_reading_is_in_size_over_slide_windows_in_order_of_end() {
        let spec = WindowSpec::Hopping {
            size_ms: 1000,
            slide_ms: 250,
            offset_ms: 0,
        };
        assert_eq!(
            all(&spec, 1100),
            vec![(250, 1250), (500, 1500), (750, 1750), (1000, 2000)]
        );
        assert_eq!(
            all(&spec, 1000),
            vec![(250, 1250), (500, 1500), (750, 1750), (1000, 2000)]
        );
        assert_eq!(
            all(&spec, 999),
            vec![(0, 1000), (250, 1250), (500, 1500), (750, 1750)]
        );
    }

    #[test]
    fn a_slide_that_does_not_divide_the_size_gives_the_right_count() {
        let spec = WindowSpec::Hopping {
            size_ms: 10,
            slide_ms: 3,
            offset_ms: 1,
        };
        for ts in -20..20 {
            let ws = all(&spec, ts);
            assert!(ws.iter().all(|&(s, e)| s <= ts && ts < e && e - s == 10));
            assert!(ws.iter().all(|&(s, _)| (s - 1).rem_euclid(3) == 0));
            // Every grid start in (ts - 10, ts] is there.
            let want = (ts - 9..=ts).filter(|s| (s - 1).rem_euclid(3) == 0).count();
            assert_eq!(ws.len(), want, "ts {ts}: {ws:?}");
        }
    }

    #[test]
    fn a_proto_session_is_cut_at_the_next_max_length_boundary() {
        let spec = WindowSpec::Session {
            gap_ms: 100,
            max_length_ms: 1000,
            offset_ms: 0,
        };
        assert_eq!(all(&spec, 500), vec![(500, 600)]);
        assert_eq!(all(&spec, 950), vec![(950, 1000)]);
        assert_eq!(spec.session_cell(950), Some(0));
        assert_eq!(spec.session_cell(1000), Some(1000));
        assert_eq!(spec.session_cell(-1), Some(-1000));
    }
}
