//! The PNG of the training curves: three panels — loss (train and
//! validation), HR@10 and NDCG@10 (validation, test when measured every epoch,
//! and a reference curve when one is given) — with labelled axes, ticks,
//! gridlines, a legend and the popularity baseline as a dashed level.
//!
//! Drawn with plotters' bitmap backend; text uses the public-domain 8×8 glyphs
//! of `font8x8` drawn pixel by pixel, so no system font library is needed.

use std::path::Path;

use font8x8::{BASIC_FONTS, UnicodeFonts};
use plotters::prelude::*;
use serde::Deserialize;

use crate::error::TrainError;
use crate::metrics::Metrics;
use crate::train::EpochRecord;

const PANEL_WIDTH: u32 = 560;
const HEIGHT: u32 = 460;
const GRID: RGBColor = RGBColor(225, 225, 225);
const GREY: RGBColor = RGBColor(110, 110, 110);
const ORANGE: RGBColor = RGBColor(230, 120, 0);
const PURPLE: RGBColor = RGBColor(140, 60, 170);
const DARK_GREEN: RGBColor = RGBColor(0, 140, 60);

/// One epoch of a reference curve (the format of `gr-ml1m-users1-2999.json`).
#[derive(Clone, Debug, Deserialize)]
pub struct ReferencePoint {
    /// 1-based epoch.
    pub epoch: f64,
    /// Test HR@10.
    #[serde(rename = "hr@10")]
    pub hr_10: f64,
    /// Test NDCG@10.
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
}

/// A reference curve to draw beside ours (`--compare CURVE.json`).
#[derive(Clone, Debug, Deserialize)]
pub struct ReferenceCurve {
    /// What was measured (free text).
    #[serde(default)]
    pub what: String,
    /// One point per epoch.
    pub curve: Vec<ReferencePoint>,
}

impl ReferenceCurve {
    /// Reads `{"what": ..., "curve": [{"epoch", "hr@10", "ndcg@10", ...}, ...]}`.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
        let curve: ReferenceCurve = serde_json::from_str(&text).map_err(|e| TrainError::Data {
            path: path.to_path_buf(),
            message: format!("not a curve file ({e}); expected {{\"curve\": [{{\"epoch\": 1, \"hr@10\": 0.03, \"ndcg@10\": 0.01}}, ...]}}"),
        })?;
        if curve.curve.is_empty() {
            return Err(TrainError::Data { path: path.to_path_buf(), message: "the curve has no point".into() });
        }
        Ok(curve)
    }
}

/// What is drawn besides our own curve.
#[derive(Clone, Debug, Default)]
pub struct PlotExtras {
    /// Popularity baseline (drawn as a dashed level on the metric panels).
    pub popularity: Option<Metrics>,
    /// Which split the popularity was measured on (for its label).
    pub popularity_split: &'static str,
    /// A reference curve.
    pub reference: Option<ReferenceCurve>,
}

fn draw_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
    x: i32,
    y: i32,
    color: &RGBColor,
    scale: i32,
) {
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let _ = area.draw_pixel(
                                (x + (i as i32 * 8 + col) * scale + dx, y + row as i32 * scale + dy),
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn text_width(text: &str, scale: i32) -> i32 {
    text.chars().count() as i32 * 8 * scale
}

/// Ticks at 1, 2 or 5 × 10^k covering [lo, hi], about `target` of them.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, usize) {
    let raw = (hi - lo) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), decimals)
}

/// A line of one panel.
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

/// One panel: title, gridlines, ticks with labels, axis labels, the series, a legend.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
    from_zero: bool,
) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let (left, right, top, bottom) = (64i32, w as i32 - 16, 80i32, h as i32 - 56);
    draw_text(area, title, (w as i32 - text_width(title, 2)) / 2, 12, &BLACK, 2);
    let points: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| p.1.is_finite()).collect();
    if points.is_empty() {
        draw_text(area, "no data", left + 10, top + 20, &BLACK, 1);
        return Ok(());
    }
    let mut x1 = points.iter().map(|p| p.0).fold(f64::MIN, f64::max).max(2.0);
    let x0 = 0.0;
    let mut y0 = points.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    let mut y1 = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    if from_zero {
        y0 = y0.min(0.0);
    }
    let pad = ((y1 - y0) * 0.06).max(1e-3);
    y1 += pad;
    if !from_zero {
        y0 -= pad;
    }
    let (x_ticks, _) = nice_ticks(x0, x1, 8);
    x1 = x1.max(*x_ticks.last().unwrap_or(&x1));
    let (y_ticks, decimals) = nice_ticks(y0, y1, 6);
    let px = |x: f64| left + ((x - x0) / (x1 - x0) * (right - left) as f64).round() as i32;
    let py = |y: f64| bottom - ((y - y0) / (y1 - y0) * (bottom - top) as f64).round() as i32;
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    for &x in &x_ticks {
        area.draw(&PathElement::new(vec![(px(x), top), (px(x), bottom)], GRID)).map_err(err)?;
        area.draw(&PathElement::new(vec![(px(x), bottom), (px(x), bottom + 5)], BLACK)).map_err(err)?;
        let label = format!("{x:.0}");
        draw_text(area, &label, px(x) - text_width(&label, 1) / 2, bottom + 9, &BLACK, 1);
    }
    for &y in &y_ticks {
        area.draw(&PathElement::new(vec![(left, py(y)), (right, py(y))], GRID)).map_err(err)?;
        area.draw(&PathElement::new(vec![(left - 5, py(y)), (left, py(y))], BLACK)).map_err(err)?;
        let label = format!("{y:.decimals$}");
        draw_text(area, &label, left - 8 - text_width(&label, 1), py(y) - 4, &BLACK, 1);
    }
    area.draw(&PathElement::new(vec![(left, top), (left, bottom), (right, bottom)], BLACK.stroke_width(1)))
        .map_err(err)?;
    draw_text(area, "epoch", (left + right - text_width("epoch", 1)) / 2, bottom + 26, &BLACK, 1);
    draw_text(area, y_label, 6, top - 14, &BLACK, 1);
    for s in series {
        let path: Vec<(i32, i32)> = s.points.iter().filter(|p| p.1.is_finite()).map(|&(x, y)| (px(x), py(y))).collect();
        if s.dashed {
            // Dashes of 8 px along the polyline's segments.
            for pair in path.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let len = (((b.0 - a.0).pow(2) + (b.1 - a.1).pow(2)) as f64).sqrt().max(1.0);
                let mut t = 0.0;
                while t < len {
                    let t2 = (t + 8.0).min(len);
                    let at = |u: f64| {
                        (a.0 + ((b.0 - a.0) as f64 * u / len) as i32, a.1 + ((b.1 - a.1) as f64 * u / len) as i32)
                    };
                    area.draw(&PathElement::new(vec![at(t), at(t2)], s.color.stroke_width(2))).map_err(err)?;
                    t += 14.0;
                }
            }
        } else {
            area.draw(&PathElement::new(path.clone(), s.color.stroke_width(2))).map_err(err)?;
            if path.len() <= 60 {
                for &p in &path {
                    area.draw(&Circle::new(p, 3, s.color.filled())).map_err(err)?;
                }
            }
        }
    }
    // Legend under the title, one entry per series.
    let mut x = left;
    let mut y = 32;
    for s in series {
        let width = 28 + text_width(&s.name, 1) + 14;
        if x + width > right {
            x = left;
            y += 12;
        }
        area.draw(&PathElement::new(
            vec![(x, y + 4), (x + 20, y + 4)],
            s.color.stroke_width(if s.dashed { 1 } else { 3 }),
        ))
        .map_err(err)?;
        draw_text(area, &s.name, x + 26, y, &s.color, 1);
        x += width;
    }
    Ok(())
}

/// Writes the curves of `history` (and the extras) as a PNG.
pub fn plot_curves(history: &[EpochRecord], extras: &PlotExtras, path: &Path) -> Result<(), TrainError> {
    let fail =
        |e: String| TrainError::Data { path: path.to_path_buf(), message: format!("cannot draw the curves: {e}") };
    let root = BitMapBackend::new(path, (PANEL_WIDTH * 3, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let panels = root.split_evenly((1, 3));
    let epoch = |r: &EpochRecord| r.epoch as f64;
    let losses = [
        Series {
            name: "train".into(),
            color: BLUE,
            points: history.iter().map(|r| (epoch(r), r.train_loss)).collect(),
            dashed: false,
        },
        Series {
            name: "validation".into(),
            color: RED,
            points: history.iter().map(|r| (epoch(r), r.val_loss)).collect(),
            dashed: false,
        },
    ];
    panel(&panels[0], "loss", "cross-entropy", &losses, false).map_err(fail)?;
    let last_epoch = history.last().map_or(1.0, |r| r.epoch as f64).max(1.0);
    for (i, (title, val, test, reference, popularity)) in [
        (
            "HR@10",
            history.iter().filter_map(|r| r.val_hr_10.map(|v| (epoch(r), v))).collect::<Vec<_>>(),
            history.iter().filter_map(|r| r.test_hr_10.map(|v| (epoch(r), v))).collect::<Vec<_>>(),
            extras.reference.as_ref().map(|c| c.curve.iter().map(|p| (p.epoch, p.hr_10)).collect::<Vec<_>>()),
            extras.popularity.as_ref().map(|m| m.hr_10),
        ),
        (
            "NDCG@10",
            history.iter().filter_map(|r| r.val_ndcg_10.map(|v| (epoch(r), v))).collect(),
            history.iter().filter_map(|r| r.test_ndcg_10.map(|v| (epoch(r), v))).collect(),
            extras.reference.as_ref().map(|c| c.curve.iter().map(|p| (p.epoch, p.ndcg_10)).collect()),
            extras.popularity.as_ref().map(|m| m.ndcg_10),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut series = vec![Series { name: "validation".into(), color: DARK_GREEN, points: val, dashed: false }];
        if !test.is_empty() {
            series.push(Series { name: "test".into(), color: PURPLE, points: test, dashed: false });
        }
        if let Some(points) = reference {
            // Drawn over our epoch range (and a little beyond), not its whole length.
            let limit = last_epoch.max(5.0) * 1.5;
            let points = points.into_iter().filter(|p| p.0 <= limit).collect();
            series.push(Series { name: "reference (test)".into(), color: ORANGE, points, dashed: false });
        }
        if let Some(level) = popularity {
            let split = if extras.popularity_split.is_empty() { "test" } else { extras.popularity_split };
            series.push(Series {
                name: format!("popularity ({split})"),
                color: GREY,
                points: vec![(1.0, level), (last_epoch.max(2.0), level)],
                dashed: true,
            });
        }
        panel(&panels[i + 1], title, title, &series, true).map_err(fail)?;
    }
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}
