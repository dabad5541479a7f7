//! The plot of `kstash bench compare`: one SVG with two panels side by
//! side, throughput (ops/s) and p99 latency (ms) against concurrent
//! clients, on a log scale of the clients measured. One line per (store,
//! workload), named in a legend on each panel.
//!
//! Invariant: rendering never fails on degenerate input (one point, zero
//! throughput, a single concurrency): every range has a minimum width.
//! Text: without plotters' font features the SVG backend writes `<text>`
//! elements and lets the viewer pick the font.

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::compare::{StoreResults, Summary};

/// Size of the whole picture in SVG pixels (two panels side by side).
const SIZE: (u32, u32) = (1200, 480);
/// Title of the left panel.
pub const THROUGHPUT_TITLE: &str = "Throughput (ops/s) vs concurrent clients";
/// Title of the right panel.
pub const LATENCY_TITLE: &str = "p99 latency (ms) vs concurrent clients";
/// Lowest latency on the log axis, in milliseconds; the axis starts at
/// half the lowest value drawn, never below this.
const MIN_LATENCY_MS: f64 = 0.01;

/// Line colours, one per series in order.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// One line: a name and its (clients, medians) points by clients.
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, Summary)>,
}

/// One line per (store, workload), in the order the stores ran.
fn series(stores: &[StoreResults]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for store in stores {
        for point in &store.points {
            let name = format!("{} {}", store.store.name(), point.workload.name());
            let at = (point.clients as f64, point.median);
            match out.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push(at),
                None => {
                    let color = PALETTE[out.len() % PALETTE.len()];
                    out.push(Series {
                        name,
                        color,
                        points: vec![at],
                    })
                }
            }
        }
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// The SVG text of the plot.
pub fn svg(stores: &[StoreResults]) -> anyhow::Result<String> {
    let series = series(stores);
    let mut clients: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(c, _)| *c))
        .collect();
    clients.sort_by(f64::total_cmp);
    clients.dedup();
    if clients.is_empty() {
        clients.push(1.0);
    }
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (left, right) = root.split_horizontally(SIZE.0 / 2);
        panel(&left, THROUGHPUT_TITLE, "ops/s", &series, &clients, |s| {
            s.ops_per_s
        })?;
        panel(&right, LATENCY_TITLE, "p99 (ms)", &series, &clients, |s| {
            s.p99_ms
        })?;
        root.present().map_err(plot_error)?;
    }
    Ok(text)
}

/// One panel: `value` of every series against clients. Throughput on a
/// linear axis from zero, latency on a log axis.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    series: &[Series],
    clients: &[f64],
    value: fn(&Summary) -> f64,
) -> anyhow::Result<()> {
    let x_range = (clients[0] / 1.5)..(clients[clients.len() - 1] * 1.5);
    let x_axis = x_range.log_scale().with_key_points(clients.to_vec());
    let values = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|(_, m)| value(m)))
    };
    let top = values().fold(0.0, f64::max);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let lines = Lines {
        series,
        value,
        y_desc,
        floor: 0.0,
        // Where lines rarely run: throughput grows to the right, latency too.
        legend_at: SeriesLabelPosition::UpperLeft,
    };
    if title == LATENCY_TITLE {
        let bottom = values().fold(f64::INFINITY, f64::min).max(MIN_LATENCY_MS);
        let bottom = if bottom.is_finite() {
            bottom / 2.0
        } else {
            MIN_LATENCY_MS
        };
        let y_axis = (bottom..(top * 2.0).max(bottom * 10.0)).log_scale();
        let chart = builder
            .build_cartesian_2d(x_axis, y_axis)
            .map_err(plot_error)?;
        Lines {
            floor: bottom,
            legend_at: SeriesLabelPosition::LowerRight,
            ..lines
        }
        .draw(chart, trim)
    } else {
        let chart = builder
            .build_cartesian_2d(x_axis, 0.0..(top * 1.15).max(1.0))
            .map_err(plot_error)?;
        lines.draw(chart, |v| format!("{v:.0}"))
    }
}

/// The lines of one panel.
struct Lines<'a> {
    series: &'a [Series],
    value: fn(&Summary) -> f64,
    y_desc: &'a str,
    /// Values below it are drawn on it (a log axis has no zero).
    floor: f64,
    /// Where the legend goes.
    legend_at: SeriesLabelPosition,
}

impl Lines<'_> {
    /// Draw the mesh, a line with dots per series, and the legend.
    fn draw<'a, 'svg: 'a, X, Y>(
        &self,
        mut chart: ChartContext<'a, SVGBackend<'svg>, Cartesian2d<X, Y>>,
        y_label: fn(&f64) -> String,
    ) -> anyhow::Result<()>
    where
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        chart
            .configure_mesh()
            .x_desc("concurrent clients (log scale)")
            .y_desc(self.y_desc)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&y_label)
            .draw()
            .map_err(plot_error)?;
        for s in self.series {
            let points: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|(c, m)| (*c, (self.value)(m).max(self.floor)))
                .collect();
            let color = s.color;
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(plot_error)?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .position(self.legend_at.clone())
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        Ok(())
    }
}

/// A number with at most three decimals and no trailing zeros.
fn trim(v: &f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn plot_error<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::compare::tests::store;
    use crate::bench::{Store, Workload};

    #[test]
    fn the_svg_has_both_panels_and_every_series() {
        let points = [
            (Workload::Put, 1, 500.0, 4.0),
            (Workload::Put, 64, 9000.0, 20.0),
            (Workload::Get, 1, 1000.0, 2.0),
            (Workload::Get, 64, 30000.0, 6.0),
        ];
        let text = svg(&[store(Store::Kstash, &points), store(Store::Etcd, &points)]).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
        for needle in [
            THROUGHPUT_TITLE,
            LATENCY_TITLE,
            "kstash put",
            "kstash get",
            "etcd put",
            "etcd get",
        ] {
            assert!(text.contains(needle), "{needle} missing from the SVG");
        }
        // Both panels carry the legend: each name twice.
        assert_eq!(text.matches("etcd get").count(), 2);
    }

    #[test]
    fn degenerate_input_still_draws() {
        let one = [(Workload::Put, 1, 0.0, 0.0)];
        let text = svg(&[store(Store::Kstash, &one)]).unwrap();
        assert!(text.contains("kstash put"));
        assert!(svg(&[]).unwrap().contains(LATENCY_TITLE));
    }
}
