//! The tools' charts, as self-contained SVG: accuracy over the run (`score`, `report`), and a
//! cluster's size over the run and the clusters' stability across model versions (`report`).

use std::fmt::Write;

use super::score::ScoreReport;
use crate::sink::{Assignment, ModelRecord};

/// The accuracy-over-time curve as a self-contained SVG: novel accuracy per slice.
pub fn accuracy_svg(report: &ScoreReport) -> String {
    let (width, height, margin) = (640.0, 320.0, 48.0);
    let n = report.slices.len().max(1) as f64;
    let x = |i: f64| margin + (width - 2.0 * margin) * if n > 1.0 { i / (n - 1.0) } else { 0.5 };
    let y = |acc: f64| height - margin - (height - 2.0 * margin) * acc;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
    percent_grid(&mut svg, &[0.0, 0.25, 0.5, 0.75, 1.0], width, margin, y);
    let points: Vec<String> = report
        .slices
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.novel_accuracy.map(|a| format!("{:.1},{:.1}", x(i as f64), y(a))))
        .collect();
    let _ = write!(svg, r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##, points.join(" "));
    for p in &points {
        let (px, py) = p.split_once(',').expect("x,y");
        let _ = write!(svg, r##"<circle cx="{px}" cy="{py}" r="3" fill="#1f77b4"/>"##);
    }
    let _ = write!(
        svg,
        r#"<text x="{cx}" y="20" text-anchor="middle">Novel-class accuracy over the run ({n} slices of published windows)</text><text x="{cx}" y="{by}" text-anchor="middle">time →</text></svg>"#,
        cx = width / 2.0,
        n = report.slices.len(),
        by = height - 12.0
    );
    svg
}

/// A cluster's windows per time bin over the run, as a small bar chart.
pub fn size_svg(windows: &[(&Assignment, i64)], t0: i64, t1: i64, bins: usize) -> String {
    let bins = bins.max(1);
    let mut counts = vec![0usize; bins];
    for (_, t) in windows {
        let bin = ((t - t0) as f64 / (t1 - t0) as f64 * bins as f64) as usize;
        counts[bin.min(bins - 1)] += 1;
    }
    let (width, height) = (480.0, 60.0);
    let top = *counts.iter().max().unwrap_or(&1) as f64;
    let bar = width / bins as f64;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" viewBox="0 0 {width} {h}" font-family="sans-serif" font-size="10"><rect width="{width}" height="{height}" fill="#f7f7f7"/>"##,
        h = height + 14.0
    );
    for (i, c) in counts.iter().enumerate() {
        let bh = height * *c as f64 / top.max(1.0);
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4c78a8"><title>{} windows</title></rect>"##,
            i as f64 * bar + 1.0,
            height - bh,
            (bar - 2.0).max(1.0),
            bh,
            c
        );
    }
    let _ = write!(
        svg,
        r#"<text x="0" y="{y}">size over the run (peak {top} windows per bar)</text></svg>"#,
        y = height + 12.0
    );
    svg
}

/// The changed fraction per model version, as a line chart.
pub fn stability_svg(model: &ModelRecord) -> String {
    let (width, height, margin) = (640.0, 240.0, 44.0);
    let points = &model.stability;
    let (v0, v1) = (points[0].model_version as f64, points[points.len() - 1].model_version as f64);
    let x = |v: f64| margin + (width - 2.0 * margin) * if v1 > v0 { (v - v0) / (v1 - v0) } else { 0.5 };
    let y = |f: f64| height - margin - (height - 2.0 * margin) * f;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12"><rect width="{width}" height="{height}" fill="white"/>"#
    );
    percent_grid(&mut svg, &[0.0, 0.5, 1.0], width, margin, y);
    let line: Vec<String> = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.model_version as f64), y(p.changed_fraction.clamp(0.0, 1.0))))
        .collect();
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="#e45756" stroke-width="2" points="{}"/><text x="{cx}" y="18" text-anchor="middle">Replay windows that changed cluster, per model version ({v0}–{v1})</text><text x="{cx}" y="{by}" text-anchor="middle">model version →</text></svg>"##,
        line.join(" "),
        cx = width / 2.0,
        by = height - 10.0
    );
    svg
}

/// Horizontal grid lines labelled in percent at `ticks` (fractions), from margin to margin.
fn percent_grid(svg: &mut String, ticks: &[f64], width: f64, margin: f64, y: impl Fn(f64) -> f64) {
    for &tick in ticks {
        let _ = write!(
            svg,
            r##"<line x1="{margin}" x2="{r}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{t}" y="{ty}" text-anchor="end">{p:.0}%</text>"##,
            r = width - margin,
            yy = y(tick),
            t = margin - 6.0,
            ty = y(tick) + 4.0,
            p = tick * 100.0
        );
    }
}
