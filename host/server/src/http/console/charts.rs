//! Line charts as server-rendered SVG (no script): the geometry is computed
//! here, the markup is the `chart.html` template, so every label is escaped
//! like the rest of the page.

use crate::metrics_ring::{SLOT_SECONDS, SLOTS, Window};

/// Drawing area inside the SVG's view box (left margin for the scale).
const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 120.0;
const LEFT: f64 = 56.0;
const TOP: f64 = 8.0;

/// One line of a chart.
pub struct Line {
    /// What it shows (the legend).
    pub name: String,
    /// Its colour class in console.css (`s0` … `s5`).
    pub class: String,
    /// SVG `points`: `x,y x,y …`.
    pub points: String,
    /// Its latest non-empty value, formatted, for the legend.
    pub latest: String,
}

/// A chart of values per slot over the ring's window.
pub struct Chart {
    /// Heading.
    pub title: String,
    /// An id for `aria-labelledby`.
    pub id: String,
    /// Its lines.
    pub lines: Vec<Line>,
    /// The scale's top label.
    pub top: String,
    /// Whether there is nothing to draw (no line has a value).
    pub empty: bool,
    /// The left edge's label (how long ago the window starts).
    pub since: String,
}

/// How a chart's values read.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Seconds, shown as µs, ms or s.
    Seconds,
    /// Per second.
    Rate,
}

/// A value in the chart's unit.
pub fn format(unit: Unit, value: f64) -> String {
    match unit {
        Unit::Seconds => duration(value),
        Unit::Rate => format!("{value:.2}/s"),
    }
}

/// Seconds as µs, ms or s with three significant digits.
pub fn duration(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.0} µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}

/// Lines from per-slot values (`None`: nothing recorded in that slot, a gap
/// drawn at zero for rates and counts, left out for durations).
pub fn chart(title: &str, id: &str, unit: Unit, series: Vec<(String, Vec<Option<f64>>)>) -> Chart {
    let max = series.iter().flat_map(|(_, values)| values.iter().flatten()).fold(0.0f64, |a, &b| a.max(b));
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let step = WIDTH / (SLOTS.saturating_sub(1).max(1) as f64);
    let empty = max <= 0.0;
    let lines = series
        .into_iter()
        .enumerate()
        .map(|(index, (name, values))| {
            let latest = values.iter().rev().flatten().next().map_or_else(|| "–".to_string(), |&v| format(unit, v));
            let points = values
                .iter()
                .enumerate()
                .filter_map(|(i, value)| {
                    let value = match (unit, value) {
                        (Unit::Seconds, None) => return None,
                        (_, None) => 0.0,
                        (_, Some(v)) => *v,
                    };
                    let x = LEFT + i as f64 * step;
                    let y = TOP + HEIGHT - (value / top) * HEIGHT;
                    Some(format!("{x:.1},{y:.1}"))
                })
                .collect::<Vec<_>>();
            // A lone point draws nothing as a polyline: a short dash instead.
            let points = match points.as_slice() {
                [only] => {
                    let (x, y) = only.split_once(',').unwrap_or((only, "0"));
                    let x: f64 = x.parse().unwrap_or(LEFT);
                    format!("{:.1},{y} {:.1},{y}", (x - 3.0).max(LEFT), x + 3.0)
                }
                _ => points.join(" "),
            };
            Line { name, class: format!("s{}", index % 6), points, latest }
        })
        .collect();
    Chart {
        title: title.to_string(),
        id: id.to_string(),
        lines,
        top: format(unit, top),
        empty,
        since: format!("−{} min", SLOTS as u64 * SLOT_SECONDS / 60),
    }
}

/// Per slot: count per second (`None` where nothing was recorded: drawn as
/// zero, and not the legend's latest value).
pub fn rates(window: &Window) -> Vec<Option<f64>> {
    window.slots.iter().map(|s| (s.count > 0).then(|| s.count as f64 / SLOT_SECONDS as f64)).collect()
}

/// Per slot: the `q` quantile (seconds), `None` where nothing was recorded.
pub fn quantiles(window: &Window, q: f64) -> Vec<Option<f64>> {
    window.slots.iter().map(|s| s.quantile(q)).collect()
}

/// Per slot: the mean (seconds), `None` where nothing was recorded.
pub fn means(window: &Window) -> Vec<Option<f64>> {
    window.slots.iter().map(|s| (s.count > 0).then(|| s.sum / s.count as f64)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_scale_into_the_drawing_area_and_gaps_stay_gaps_for_durations() {
        let mut values = vec![None; SLOTS];
        values[0] = Some(2.0);
        values[SLOTS - 1] = Some(1.0);
        let c = chart("t", "c", Unit::Seconds, vec![("p50".into(), values.clone())]);
        assert!(!c.empty);
        let points: Vec<(f64, f64)> = c.lines[0]
            .points
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(points.len(), 2, "slots without values are not drawn for durations");
        let mut lone = vec![None; SLOTS];
        lone[10] = Some(1.0);
        let dash = chart("l", "l", Unit::Seconds, vec![("x".into(), lone)]);
        assert_eq!(dash.lines[0].points.split(' ').count(), 2, "a lone value is drawn as a dash");
        assert_eq!(points[0].0, LEFT);
        assert!((points[1].0 - (LEFT + WIDTH)).abs() < 0.1);
        // The highest value sits at 1/1.1 of the height, the other at half of that.
        assert!((points[0].1 - (TOP + HEIGHT - HEIGHT / 1.1)).abs() < 0.1);
        assert!((points[1].1 - (TOP + HEIGHT - HEIGHT / 2.2)).abs() < 0.1);
        assert_eq!(c.lines[0].latest, "1.00 s");
        let rate = chart("r", "r", Unit::Rate, vec![("rps".into(), values)]);
        assert_eq!(rate.lines[0].points.split(' ').count(), SLOTS, "rates draw empty slots as zero");
        assert!(chart("e", "e", Unit::Rate, vec![("x".into(), vec![None; SLOTS])]).empty);
    }

    #[test]
    fn durations_read_in_the_unit_that_fits() {
        assert_eq!(duration(0.000_250), "250 µs");
        assert_eq!(duration(0.0125), "12.50 ms");
        assert_eq!(duration(2.5), "2.50 s");
    }
}
