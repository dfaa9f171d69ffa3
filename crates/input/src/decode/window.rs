//! Where windows fall in a segment and which frames and samples each takes: pure arithmetic,
//! kept apart from FFmpeg so it can be tested exactly.

use std::ops::Range;

/// A window's place in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub index: u32,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Windows of a segment lasting `duration_ms`: one every `hop_ms` while a whole window fits, so
/// the tail shorter than a window is left out; a segment shorter than one window still yields
/// one window covering all of it, and an empty one none.
pub fn spans(duration_ms: u64, window_ms: u64, hop_ms: u64) -> Vec<Span> {
    assert!(window_ms > 0 && hop_ms > 0, "window and hop must be positive");
    if duration_ms == 0 {
        return Vec::new();
    }
    if duration_ms < window_ms {
        return vec![Span { index: 0, start_ms: 0, end_ms: duration_ms }];
    }
    let count = (duration_ms - window_ms) / hop_ms + 1;
    (0..count).map(|i| Span { index: i as u32, start_ms: i * hop_ms, end_ms: i * hop_ms + window_ms }).collect()
}

/// Times (ms) at which a window samples its `t` frames: the centres of `t` equal parts.
pub fn frame_times(span: &Span, t: usize) -> Vec<f64> {
    let len = (span.end_ms - span.start_ms) as f64;
    (0..t).map(|i| span.start_ms as f64 + (i as f64 + 0.5) * len / t as f64).collect()
}

/// The frame on screen at `t_ms`: the last whose timestamp is at or before it, or the first
/// frame when `t_ms` precedes them all. `pts_ms` must be sorted and non-empty.
pub fn frame_at(pts_ms: &[f64], t_ms: f64) -> usize {
    assert!(!pts_ms.is_empty(), "no frames to pick from");
    pts_ms.partition_point(|&p| p <= t_ms).saturating_sub(1)
}

/// Points per sampled frame of the first window at which a segment shorter than one window may
/// sample: its sample times depend on its length, unknown while decoding.
const SHORT_GRID: usize = 64;

/// Whether a window may sample a frame shown from `from_ms` until the next frame at `to_ms`: a
/// frame no window samples need not be kept. Whole windows sample at fixed times, counted here as
/// if the segment went on (its end is not known while decoding), which only keeps a frame more.
/// A segment shorter than one window samples at `frame_times` of its own length; for those a
/// grid of `SHORT_GRID` points per sampled frame across the first window stands in, so a frame is
/// only dropped there when frames come faster than one per grid step (256 a second for 1 s
/// windows of 4 frames). Kept frames are thus at most `T` per window, `64·T`, and the first.
pub fn sampled_between(from_ms: f64, to_ms: f64, window_ms: u64, hop_ms: u64, t: usize) -> bool {
    // Slack for the rounding of `frame_times`: keeping a frame too many is harmless.
    const SLACK: f64 = 1e-6;
    let (from, to) = (from_ms - SLACK, to_ms + SLACK);
    let (window, hop) = (window_ms as f64, hop_ms as f64);
    let whole_windows = (0..t).any(|j| {
        let offset = (j as f64 + 0.5) * window / t as f64;
        let first = ((from - offset) / hop).ceil().max(0.0);
        first * hop + offset < to
    });
    let grid = (SHORT_GRID * t) as f64;
    let step = window / grid;
    let first_point = (from.max(0.0) / step).ceil();
    let short_segment = first_point < grid && first_point * step < to;
    whole_windows || short_segment
}

/// Sample indices of a window at `rate` Hz.
pub fn sample_range(span: &Span, rate: u32) -> Range<usize> {
    let at = |ms: u64| (ms as u128 * rate as u128 / 1000) as usize;
    at(span.start_ms)..at(span.end_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_seconds_one_second_windows_half_second_hop() {
        let s = spans(3000, 1000, 500);
        assert_eq!(s.len(), 5);
        assert_eq!((s[0].start_ms, s[0].end_ms), (0, 1000));
        assert_eq!((s[4].index, s[4].start_ms, s[4].end_ms), (4, 2000, 3000));
    }

    #[test]
    fn tail_shorter_than_a_window_is_left_out() {
        let s = spans(2500, 1000, 1000);
        assert_eq!(s.iter().map(|s| s.start_ms).collect::<Vec<_>>(), vec![0, 1000]);
    }

    #[test]
    fn short_and_empty_segments() {
        assert_eq!(spans(400, 1000, 1000), vec![Span { index: 0, start_ms: 0, end_ms: 400 }]);
        assert!(spans(0, 1000, 1000).is_empty());
    }

    #[test]
    fn hop_longer_than_window_skips_media() {
        let s = spans(5000, 1000, 2000);
        assert_eq!(
            s.iter().map(|s| (s.start_ms, s.end_ms)).collect::<Vec<_>>(),
            vec![(0, 1000), (2000, 3000), (4000, 5000)]
        );
    }

    #[test]
    fn window_count_matches_formula_for_many_lengths() {
        for duration in (0..20_000).step_by(37) {
            for (window, hop) in [(1000, 1000), (1000, 250), (2000, 700), (333, 1000)] {
                let s = spans(duration, window, hop);
                let expected = if duration == 0 {
                    0
                } else if duration < window {
                    1
                } else {
                    (duration - window) / hop + 1
                };
                assert_eq!(s.len() as u64, expected, "d={duration} w={window} h={hop}");
                assert!(s.iter().all(|s| s.end_ms <= duration.max(1)));
                assert!(s.iter().enumerate().all(|(i, s)| s.index as usize == i));
            }
        }
    }

    #[test]
    fn frames_sample_window_centres_at_25_fps() {
        // 25 fps: frames every 40 ms. A 1 s window with T=4 samples 125, 375, 625, 875 ms.
        let pts: Vec<f64> = (0..75).map(|i| i as f64 * 40.0).collect();
        let span = Span { index: 1, start_ms: 1000, end_ms: 2000 };
        let times = frame_times(&span, 4);
        assert_eq!(times, vec![1125.0, 1375.0, 1625.0, 1875.0]);
        let picked: Vec<usize> = times.iter().map(|&t| frame_at(&pts, t)).collect();
        assert_eq!(picked, vec![28, 34, 40, 46]);
        assert_eq!(frame_at(&pts, -5.0), 0);
        assert_eq!(frame_at(&pts, 1e9), 74);
    }

    /// Thinning frames by `sampled_between` picks the same frame for every sample time of every
    /// window, for segments longer and shorter than a window, at rates up to 250 fps.
    #[test]
    fn kept_frames_give_the_same_windows() {
        for (fps, seconds, window, hop, t) in [
            (25.0, 3.0, 1000, 500, 3),
            (250.0, 2.0, 1000, 1000, 4),
            (30.0, 0.4, 1000, 1000, 4),
            (7.0, 5.0, 700, 1300, 2),
        ] {
            let all: Vec<f64> = (0..(fps * seconds) as usize).map(|i| i as f64 * 1000.0 / fps).collect();
            let mut kept: Vec<usize> = Vec::new();
            for (i, &p) in all.iter().enumerate() {
                if let Some(&last) = kept.last() {
                    if kept.len() > 1 && !sampled_between(all[last], p, window, hop, t) {
                        kept.pop();
                    }
                }
                kept.push(i);
            }
            let kept_pts: Vec<f64> = kept.iter().map(|&i| all[i]).collect();
            let duration = (seconds * 1000.0) as u64;
            for span in spans(duration, window, hop) {
                for s in frame_times(&span, t) {
                    assert_eq!(kept[frame_at(&kept_pts, s)], frame_at(&all, s), "fps {fps} at {s} ms");
                }
            }
            assert!(kept.len() <= spans(duration, window, hop).len() * t + SHORT_GRID * t + 1);
            // Past the first window, at most one frame per sample time (and the newest) stays.
            let later = kept_pts.iter().filter(|&&p| p >= window as f64).count();
            assert!(later <= spans(duration, window, hop).len() * t + 1, "{later} frames kept at {fps} fps");
        }
    }

    #[test]
    fn samples_of_a_window_at_16k() {
        let span = Span { index: 2, start_ms: 1000, end_ms: 2000 };
        assert_eq!(sample_range(&span, 16_000), 16_000..32_000);
        assert_eq!(sample_range(&span, 16_000).len(), 16_000);
    }
}
