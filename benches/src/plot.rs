//! SVG plots with plotters (SVG backend only, no fonts needed): latency over time, and its
//! distribution as a cumulative curve, one line per cell.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// Most points drawn per series (the SVG stays small).
const MAX_POINTS: usize = 1500;

/// One line: a name and its `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's text.
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

/// Thins a time series to at most `max` points by keeping the highest value of each of `max`
/// equal slices, so spikes stay visible.
pub fn thin_keep_peaks(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max == 0 {
        return points.to_vec();
    }
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .filter_map(|c| c.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)))
        .collect()
}

/// The cumulative distribution of `values`: `(value, share at or below it)`, at most `max`
/// points, ending at `(max value, 1.0)`.
pub fn cdf(values: &[f64], max: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(max.max(1));
    let mut out: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (v[i], (i + 1) as f64 / n as f64))
        .collect();
    if out.last().map(|p| p.1) != Some(1.0) {
        out.push((v[n - 1], 1.0));
    }
    out
}

fn plot_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Plot {
        path: path.display().to_string(),
        reason,
    }
}

/// Draws `series` as lines into an SVG at `path`.
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_max: Option<f64>,
) -> Result<()> {
    let err = plot_err(path);
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_top) = (0.0f64, 0.0f64);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_top = y_top.max(y);
    }
    let y_top = y_max.unwrap_or(y_top * 1.05).max(1e-3);
    let x_max = x_max.max(1e-3);
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max, 0f64..y_top)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|&(x, y)| (x, y.min(y_top))),
                color.stroke_width(1),
            ))
            .map_err(|e| err(e.to_string()))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Latency over time, one line per `(name, trace)`.
pub fn latency_over_time(
    path: &Path,
    title: &str,
    traces: &[(String, &[(f64, f64)])],
) -> Result<()> {
    let series: Vec<Series> = traces
        .iter()
        .map(|(name, t)| Series {
            name: name.clone(),
            points: thin_keep_peaks(t, MAX_POINTS),
        })
        .collect();
    lines(
        path,
        title,
        "time since the player started (s)",
        "latency (ms)",
        &series,
        None,
    )
}

/// The latency distribution (cumulative), one line per `(name, trace)`.
pub fn latency_distribution(
    path: &Path,
    title: &str,
    traces: &[(String, &[(f64, f64)])],
) -> Result<()> {
    let series: Vec<Series> = traces
        .iter()
        .map(|(name, t)| {
            let v: Vec<f64> = t.iter().map(|p| p.1).collect();
            Series {
                name: name.clone(),
                points: cdf(&v, MAX_POINTS)
                    .into_iter()
                    .map(|(x, y)| (x, y * 100.0))
                    .collect(),
            }
        })
        .collect();
    // Lines here are (latency, share): swap nothing, but the y axis is the share in %.
    lines(
        path,
        title,
        "latency (ms)",
        "frames at or below (%)",
        &series,
        Some(100.0),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn thinning_keeps_the_peaks() {
        let pts: Vec<(f64, f64)> = (0..1000)
            .map(|i| (f64::from(i), if i == 537 { 99.0 } else { 1.0 }))
            .collect();
        let t = thin_keep_peaks(&pts, 100);
        assert_eq!(t.len(), 100);
        assert!(t.contains(&(537.0, 99.0)));
        assert_eq!(thin_keep_peaks(&pts[..5], 100).len(), 5);
    }

    #[test]
    fn cdf_ends_at_one_and_rises() {
        let v: Vec<f64> = (1..=10_000).map(f64::from).rev().collect();
        let c = cdf(&v, 100);
        assert!(c.len() <= 101);
        assert_eq!(c.first().unwrap().0, 1.0);
        assert_eq!(*c.last().unwrap(), (10_000.0, 1.0));
        assert!(c.windows(2).all(|w| w[1].0 >= w[0].0 && w[1].1 > w[0].1));
        assert!(cdf(&[], 10).is_empty());
    }

    #[test]
    fn draws_an_svg() {
        let dir = tempfile::Builder::new()
            .prefix("audiowire-bench-plot-")
            .tempdir()
            .unwrap();
        let p = dir.path().join("t.svg");
        let trace: Vec<(f64, f64)> = (0..500)
            .map(|i| (f64::from(i) * 0.01, 20.0 + f64::from(i % 7)))
            .collect();
        latency_over_time(&p, "test", &[("a".into(), &trace)]).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("latency (ms)"));
        latency_distribution(&dir.path().join("c.svg"), "test", &[("a".into(), &trace)]).unwrap();
    }
}
