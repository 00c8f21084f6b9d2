//! The PNG of the training curves: training and validation loss (left) and
//! validation NDCG@10 (right) per epoch. Drawn with plotters' bitmap backend;
//! labels use the public-domain 8×8 glyphs of `font8x8` drawn pixel by pixel,
//! so no system font library is needed.

use std::path::Path;

use font8x8::{BASIC_FONTS, UnicodeFonts};
use plotters::prelude::*;

use crate::error::TrainError;
use crate::train::EpochRecord;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 420;

fn draw_text<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, text: &str, x: i32, y: i32, color: &RGBColor) {
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = BASIC_FONTS.get(ch) else { continue };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    let _ = area.draw_pixel((x + i as i32 * 8 + col, y + row as i32), color);
                }
            }
        }
    }
}

/// One panel: axes, min/max labels, one polyline per series.
fn panel<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, title: &str, series: &[(&str, RGBColor, Vec<(f64, f64)>)]) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let (left, right, top, bottom) = (70i32, w as i32 - 20, 40i32, h as i32 - 40);
    draw_text(area, title, left, 12, &BLACK);
    let points: Vec<(f64, f64)> = series.iter().flat_map(|s| s.2.iter().copied()).collect();
    if points.is_empty() {
        draw_text(area, "no data", left, top + 20, &BLACK);
        return Ok(());
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1e-3;
    }
    let px = |x: f64| left + ((x - x0) / (x1 - x0) * (right - left) as f64) as i32;
    let py = |y: f64| bottom - ((y - y0) / (y1 - y0) * (bottom - top) as f64) as i32;
    area.draw(&PathElement::new(vec![(left, top), (left, bottom), (right, bottom)], BLACK)).map_err(|e| e.to_string())?;
    draw_text(area, &format!("{y1:.4}"), 2, top - 4, &BLACK);
    draw_text(area, &format!("{y0:.4}"), 2, bottom - 4, &BLACK);
    draw_text(area, &format!("epoch {x0:.0}"), left, bottom + 8, &BLACK);
    let last = format!("{x1:.0}");
    draw_text(area, &last, right - 8 * last.len() as i32, bottom + 8, &BLACK);
    for (i, (name, color, values)) in series.iter().enumerate() {
        let path: Vec<(i32, i32)> = values.iter().map(|&(x, y)| (px(x), py(y))).collect();
        area.draw(&PathElement::new(path.clone(), color.stroke_width(2))).map_err(|e| e.to_string())?;
        for p in path {
            area.draw(&Circle::new(p, 3, color.filled())).map_err(|e| e.to_string())?;
        }
        draw_text(area, name, right - 160, top + 4 + 12 * i as i32, color);
    }
    Ok(())
}

/// Writes the curves of `history` as a PNG.
pub fn plot_curves(history: &[EpochRecord], path: &Path) -> Result<(), TrainError> {
    let fail = |e: String| TrainError::Data { path: path.to_path_buf(), message: format!("cannot draw the curves: {e}") };
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let (losses, ndcg) = root.split_horizontally(WIDTH / 2);
    let train: Vec<(f64, f64)> = history.iter().map(|r| (r.epoch as f64, r.train_loss)).collect();
    let val: Vec<(f64, f64)> = history.iter().map(|r| (r.epoch as f64, r.val_loss)).collect();
    panel(&losses, "sampled-softmax loss", &[("train", BLUE, train), ("validation", RED, val)]).map_err(fail)?;
    let metric: Vec<(f64, f64)> = history.iter().filter_map(|r| r.val_ndcg_10.map(|v| (r.epoch as f64, v))).collect();
    panel(&ndcg, "validation NDCG@10 (engine)", &[("NDCG@10", GREEN, metric)]).map_err(fail)?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}
