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

    #[test]
    fn samples_of_a_window_at_16k() {
        let span = Span { index: 2, start_ms: 1000, end_ms: 2000 };
        assert_eq!(sample_range(&span, 16_000), 16_000..32_000);
        assert_eq!(sample_range(&span, 16_000).len(), 16_000);
    }
}
