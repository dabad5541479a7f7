//! The HTML page of one run: summary, throughput and latency over time, and
//! the faults the nemesis injected.
//!
//! Invariant: the page is self-contained (inline SVG drawn by plotters' SVG
//! backend, no scripts, no external resources) and every string that comes
//! from the run (title, summary, fault kinds and targets) is HTML-escaped
//! before it is written. Rendering never panics on empty or degenerate
//! input: every plotted range has a minimum width, and plotters' errors come
//! back as [`std::io::Error`].
//!
//! Text: without the `ttf`/`ab_glyph` features plotters falls back to a naive
//! font that only estimates text size; the SVG backend writes text as SVG
//! `<text>` elements and lets the browser pick the font, so captions, axis
//! labels and legends work in this configuration (checked by a test below).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::history::Outcome;

/// One client operation as the plots see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Operation name: "read", "write", "cas", "add", "read_set", "login",
    /// "use", "revoke", "seal", "unseal", ...
    pub f: String,
    /// Nanoseconds since the run started (monotonic clock).
    pub invoke_ns: u64,
    /// Nanoseconds since the run started when the answer arrived; `None`
    /// when the client never heard back.
    pub complete_ns: Option<u64>,
    /// How the operation ended, as the client saw it.
    pub outcome: Outcome,
}

/// One fault the nemesis injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultWindow {
    /// What was done, e.g. "partition-leader", "kill", "pause".
    pub kind: String,
    /// Which nodes it hit, e.g. `["kstash-1"]`.
    pub targets: Vec<String>,
    /// Nanoseconds since the run started when the fault began.
    pub start_ns: u64,
    /// When it was healed; `None`: healed only at the end of the run.
    pub heal_ns: Option<u64>,
    /// When the cluster was serving on every node again after the heal;
    /// `None`: not observed.
    pub recovered_ns: Option<u64>,
}

/// Write `dir/report.html`: title, the summary (pretty-printed JSON in a
/// `<pre>`), a throughput plot, a latency plot and the table of faults.
///
/// `end_ns` is the length of the run; the time axis covers `0..end_ns`,
/// widened if a sample or fault lies beyond it, and at least one second.
/// Creates `dir` if needed and returns the path of the page.
pub fn write_html(
    dir: &Path,
    title: &str,
    summary: &serde_json::Value,
    samples: &[Sample],
    faults: &[FaultWindow],
    end_ns: u64,
) -> io::Result<PathBuf> {
    let html = render_html(title, summary, samples, faults, end_ns)?;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("report.html");
    std::fs::write(&path, html)?;
    Ok(path)
}

/// Size of each plot in SVG pixels.
const PLOT_SIZE: (u32, u32) = (1000, 420);
/// Above this many latency points, ok ops are subsampled (every k-th).
const MAX_LATENCY_POINTS: usize = 20_000;
/// Lowest latency on the log axis, in milliseconds; faster ops sit on it.
const MIN_LATENCY_MS: f64 = 0.1;
/// Opacity of the fault bands. Nothing else in the plots uses it, so tests
/// can count the bands in the SVG.
const BAND_OPACITY: f64 = 0.22;

const OK_COLOR: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const FAIL_COLOR: RGBColor = RGBColor(0xe0, 0x5a, 0x1b);
const INFO_COLOR: RGBColor = RGBColor(0x80, 0x80, 0x80);
const P50_COLOR: RGBColor = RGBColor(0x1f, 0x3a, 0x93);
const P99_COLOR: RGBColor = RGBColor(0x8e, 0x24, 0xaa);

/// Colors of fault kinds, assigned in sorted order of kind names.
const FAULT_PALETTE: [RGBColor; 6] = [
    RGBColor(0x42, 0x85, 0xf4),
    RGBColor(0xf4, 0xb4, 0x00),
    RGBColor(0xdb, 0x44, 0x37),
    RGBColor(0x00, 0xac, 0xc1),
    RGBColor(0xab, 0x47, 0xbc),
    RGBColor(0x8d, 0x6e, 0x63),
];

const OUTCOMES: [(Outcome, &str, RGBColor); 3] = [
    (Outcome::Ok, "ok", OK_COLOR),
    (Outcome::Fail, "fail", FAIL_COLOR),
    (Outcome::Info, "info", INFO_COLOR),
];

/// A shaded fault interval in seconds, and the recovery mark if any.
#[derive(Clone, Debug, PartialEq)]
struct Band {
    start_s: f64,
    end_s: f64,
    recovered_s: Option<f64>,
    color: RGBColor,
}

/// What the latency plot draws, after subsampling.
struct LatencyPoints {
    /// (invoke s, latency ms, outcome) of each drawn op.
    points: Vec<(f64, f64, Outcome)>,
    /// Ops that have a latency at all.
    total: usize,
    /// `Some(k)` when only every k-th ok op is drawn.
    every_kth_ok: Option<usize>,
}

fn render_html(
    title: &str,
    summary: &serde_json::Value,
    samples: &[Sample],
    faults: &[FaultWindow],
    end_ns: u64,
) -> io::Result<String> {
    let x_max_s = time_axis_end_s(samples, faults, end_ns);
    let bands = fault_bands(faults, end_ns);
    let latency = latency_points(samples);
    let throughput_svg = throughput_svg(samples, &bands, x_max_s)?;
    let latency_svg = latency_svg(&latency, samples, &bands, x_max_s)?;
    let summary_json = serde_json::to_string_pretty(summary).map_err(io::Error::other)?;

    let mut html = String::new();
    let title = escape_html(title);
    // Writing into a String cannot fail; the results are ignored on purpose.
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; }}\n\
         pre {{ background: #f4f4f4; padding: 1em; overflow-x: auto; }}\n\
         table {{ border-collapse: collapse; }}\n\
         th, td {{ border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }}\n\
         figure {{ margin: 1em 0; }}\n\
         .swatch {{ display: inline-block; width: 1em; height: 1em; \
         vertical-align: middle; margin: 0 0.3em 0 1em; }}\n\
         </style>\n</head>\n<body>\n<h1>{title}</h1>\n\
         <h2>Summary</h2>\n<pre>{}</pre>\n",
        escape_html(&summary_json)
    );

    let _ = write!(
        html,
        "<h2>Throughput</h2>\n<figure>\n{throughput_svg}\n<figcaption>Completed \
         operations per second (1-second buckets by completion time), one line per \
         outcome; ops never answered are not counted. {}</figcaption>\n</figure>\n",
        fault_legend(faults)
    );

    let sampling = match latency.every_kth_ok {
        Some(k) => format!(
            " Showing {} of {} points: one ok op in every {k}, and every fail/info op.",
            latency.points.len(),
            latency.total
        ),
        None => String::new(),
    };
    let _ = write!(
        html,
        "<h2>Latency</h2>\n<figure>\n{latency_svg}\n<figcaption>Latency (ms, log \
         scale, floor {MIN_LATENCY_MS} ms) against invoke time (s), one point per \
         answered op; lines: per-second p50 and p99 of ok ops.{sampling} {}</figcaption>\n\
         </figure>\n",
        fault_legend(faults)
    );

    html.push_str(&fault_table(faults));
    html.push_str("</body>\n</html>\n");
    Ok(html)
}

/// Right end of the time axis in seconds: `end_ns`, widened to cover every
/// sample and fault, and at least one second.
fn time_axis_end_s(samples: &[Sample], faults: &[FaultWindow], end_ns: u64) -> f64 {
    let last_sample = samples
        .iter()
        .map(|s| s.complete_ns.unwrap_or(s.invoke_ns).max(s.invoke_ns));
    let last_fault = faults.iter().map(|f| {
        f.start_ns
            .max(f.heal_ns.unwrap_or(0))
            .max(f.recovered_ns.unwrap_or(0))
    });
    let last_ns = last_sample.chain(last_fault).fold(end_ns, u64::max);
    secs(last_ns).max(1.0)
}

/// The shaded interval of each fault: `[start, heal or end of run]`.
fn fault_bands(faults: &[FaultWindow], end_ns: u64) -> Vec<Band> {
    faults
        .iter()
        .map(|f| {
            let end_ns = f.heal_ns.unwrap_or(end_ns).max(f.start_ns);
            Band {
                start_s: secs(f.start_ns),
                end_s: secs(end_ns),
                recovered_s: f.recovered_ns.map(secs),
                color: fault_color(faults, &f.kind),
            }
        })
        .collect()
}

/// The color of a fault kind: kinds are numbered in sorted order, so the
/// same set of kinds always gets the same colors.
fn fault_color(faults: &[FaultWindow], kind: &str) -> RGBColor {
    let kinds: BTreeSet<&str> = faults.iter().map(|f| f.kind.as_str()).collect();
    let index = kinds.iter().position(|k| *k == kind).unwrap_or(0);
    FAULT_PALETTE[index % FAULT_PALETTE.len()]
}

/// HTML swatches naming the color of each fault kind, or "" without faults.
fn fault_legend(faults: &[FaultWindow]) -> String {
    let kinds: BTreeSet<&str> = faults.iter().map(|f| f.kind.as_str()).collect();
    if kinds.is_empty() {
        return String::new();
    }
    let mut out = String::from("Shaded: faults (vertical line: recovered).");
    for kind in kinds {
        let RGBColor(r, g, b) = fault_color(faults, kind);
        let _ = write!(
            out,
            "<span class=\"swatch\" style=\"background: #{r:02x}{g:02x}{b:02x}; \
             opacity: {BAND_OPACITY};\"></span>{}",
            escape_html(kind)
        );
    }
    out
}

/// Answered ops as (invoke s, latency ms, outcome), every k-th ok op only
/// when there are more than [`MAX_LATENCY_POINTS`].
fn latency_points(samples: &[Sample]) -> LatencyPoints {
    let answered: Vec<(f64, f64, Outcome)> = samples
        .iter()
        .filter_map(|s| {
            let complete_ns = s.complete_ns?;
            let latency_ms = complete_ns.saturating_sub(s.invoke_ns) as f64 / 1e6;
            Some((secs(s.invoke_ns), latency_ms, s.outcome))
        })
        .collect();
    let total = answered.len();
    if total <= MAX_LATENCY_POINTS {
        return LatencyPoints {
            points: answered,
            total,
            every_kth_ok: None,
        };
    }
    let k = total.div_ceil(MAX_LATENCY_POINTS);
    let mut ok_seen = 0usize;
    let points = answered
        .into_iter()
        .filter(|(_, _, outcome)| {
            if *outcome != Outcome::Ok {
                return true;
            }
            ok_seen += 1;
            (ok_seen - 1).is_multiple_of(k)
        })
        .collect();
    LatencyPoints {
        points,
        total,
        every_kth_ok: Some(k),
    }
}

/// Completed ops per 1-second bucket (by completion time) for `outcome`;
/// one count per second in `0..ceil(x_max_s)`.
fn throughput_counts(samples: &[Sample], outcome: Outcome, x_max_s: f64) -> Vec<u64> {
    let buckets = (x_max_s.ceil() as usize).max(1);
    let mut counts = vec![0u64; buckets];
    for s in samples.iter().filter(|s| s.outcome == outcome) {
        if let Some(complete_ns) = s.complete_ns {
            let bucket = ((complete_ns / 1_000_000_000) as usize).min(buckets - 1);
            counts[bucket] += 1;
        }
    }
    counts
}

/// Per-second percentile `q` (0..=1, nearest rank) of ok latencies by invoke
/// second, in ms, as runs of consecutive seconds that had ok ops (so that a
/// gap in service shows as a gap in the line).
fn ok_percentile_runs(samples: &[Sample], q: f64, x_max_s: f64) -> Vec<Vec<(f64, f64)>> {
    let buckets = (x_max_s.ceil() as usize).max(1);
    let mut per_second: Vec<Vec<f64>> = vec![Vec::new(); buckets];
    for s in samples.iter().filter(|s| s.outcome == Outcome::Ok) {
        if let Some(complete_ns) = s.complete_ns {
            let bucket = ((s.invoke_ns / 1_000_000_000) as usize).min(buckets - 1);
            per_second[bucket].push(complete_ns.saturating_sub(s.invoke_ns) as f64 / 1e6);
        }
    }
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for (second, latencies) in per_second.iter_mut().enumerate() {
        if latencies.is_empty() {
            if !run.is_empty() {
                runs.push(std::mem::take(&mut run));
            }
            continue;
        }
        latencies.sort_by(f64::total_cmp);
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        run.push((second as f64 + 0.5, latencies[rank - 1].max(MIN_LATENCY_MS)));
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

fn throughput_svg(samples: &[Sample], bands: &[Band], x_max_s: f64) -> io::Result<String> {
    let series: Vec<(&str, RGBColor, Vec<u64>)> = OUTCOMES
        .iter()
        .map(|(outcome, name, color)| {
            (*name, *color, throughput_counts(samples, *outcome, x_max_s))
        })
        .collect();
    let y_max = series
        .iter()
        .flat_map(|(_, _, counts)| counts.iter().copied())
        .max()
        .unwrap_or(0) as f64;
    let y_max = (y_max * 1.1).max(1.0);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Throughput", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max_s, 0f64..y_max)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("completed ops/s")
            .draw()
            .map_err(plot_error)?;
        draw_bands(&mut chart, bands, 0.0, y_max)?;
        for (name, color, counts) in series {
            let points = counts
                .iter()
                .enumerate()
                .map(|(second, count)| (second as f64 + 0.5, *count as f64));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_error)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        draw_legend(&mut chart)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn latency_svg(
    latency: &LatencyPoints,
    samples: &[Sample],
    bands: &[Band],
    x_max_s: f64,
) -> io::Result<String> {
    let max_ms = latency
        .points
        .iter()
        .map(|(_, ms, _)| *ms)
        .fold(MIN_LATENCY_MS, f64::max);
    let y_max = (max_ms * 1.5).max(MIN_LATENCY_MS * 10.0);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max_s, (MIN_LATENCY_MS..y_max).log_scale())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("invoke time (s)")
            .y_desc("latency (ms)")
            .y_label_formatter(&|ms| trim_number(*ms, 3))
            .draw()
            .map_err(plot_error)?;
        draw_bands(&mut chart, bands, MIN_LATENCY_MS, y_max)?;
        for (outcome, name, color) in OUTCOMES {
            let points = latency
                .points
                .iter()
                .filter(move |(_, _, o)| *o == outcome)
                .map(move |(s, ms, _)| {
                    Circle::new((*s, ms.max(MIN_LATENCY_MS)), 2, color.filled())
                });
            chart
                .draw_series(points)
                .map_err(plot_error)?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
        }
        for (q, name, color) in [(0.5, "ok p50", P50_COLOR), (0.99, "ok p99", P99_COLOR)] {
            for (i, run) in ok_percentile_runs(samples, q, x_max_s)
                .into_iter()
                .enumerate()
            {
                let drawn = chart
                    .draw_series(LineSeries::new(run, color.stroke_width(2)))
                    .map_err(plot_error)?;
                if i == 0 {
                    drawn.label(name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                }
            }
        }
        draw_legend(&mut chart)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Shade every fault band across `y_low..y_high` and mark its recovery with
/// a thin vertical line. Called before the data so the data stay on top.
fn draw_bands<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    bands: &[Band],
    y_low: f64,
    y_high: f64,
) -> io::Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(bands.iter().map(|band| {
            Rectangle::new(
                [(band.start_s, y_low), (band.end_s, y_high)],
                band.color.mix(BAND_OPACITY).filled(),
            )
        }))
        .map_err(plot_error)?;
    for band in bands {
        if let Some(recovered_s) = band.recovered_s {
            chart
                .draw_series(LineSeries::new(
                    [(recovered_s, y_low), (recovered_s, y_high)],
                    band.color.stroke_width(1),
                ))
                .map_err(plot_error)?;
        }
    }
    Ok(())
}

fn draw_legend<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
) -> io::Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

/// The HTML table of faults: kind, targets, start, heal, time to recover.
fn fault_table(faults: &[FaultWindow]) -> String {
    let mut out = String::from("<h2>Faults</h2>\n");
    if faults.is_empty() {
        out.push_str("<p>No faults were injected.</p>\n");
        return out;
    }
    out.push_str(
        "<table>\n<tr><th>kind</th><th>targets</th><th>start (s)</th><th>heal (s)</th>\
         <th>time to recover (s)</th></tr>\n",
    );
    for f in faults {
        let heal = f
            .heal_ns
            .map_or_else(|| "end of run".to_owned(), |ns| trim_number(secs(ns), 3));
        let recover = match (f.heal_ns, f.recovered_ns) {
            (Some(heal_ns), Some(recovered_ns)) => recovered_ns
                .checked_sub(heal_ns)
                .map_or_else(|| "—".to_owned(), |ns| trim_number(secs(ns), 3)),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(&f.kind),
            escape_html(&f.targets.join(", ")),
            trim_number(secs(f.start_ns), 3),
            escape_html(&heal),
            recover,
        );
    }
    out.push_str("</table>\n");
    out
}

fn plot_error<E: std::fmt::Display>(err: E) -> io::Error {
    io::Error::other(format!("plotting failed: {err}"))
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// `value` with at most `decimals` decimals and no trailing zeros:
/// 2.5 → "2.5", 10.0 → "10".
fn trim_number(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Escape the five characters that matter in HTML text and attributes.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let path = std::env::temp_dir().join(format!(
                "kstash-report-{name}-{}-{nanos}",
                std::process::id()
            ));
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sample(f: &str, invoke_ns: u64, latency_ns: Option<u64>, outcome: Outcome) -> Sample {
        Sample {
            f: f.to_owned(),
            invoke_ns,
            complete_ns: latency_ns.map(|l| invoke_ns + l),
            outcome,
        }
    }

    /// 20 s of ops every 100 ms: ok mostly, fail and info during the faults.
    fn synthetic_samples() -> Vec<Sample> {
        (0..200u64)
            .map(|i| {
                let invoke_ns = i * 100 * MS;
                let second = invoke_ns / S;
                match (second, i % 3) {
                    (8..=9, 0) => sample("write", invoke_ns, None, Outcome::Info),
                    (8..=9, _) => sample("cas", invoke_ns, Some(3 * MS), Outcome::Fail),
                    (15, _) => sample("read", invoke_ns, Some(900 * MS), Outcome::Info),
                    _ => sample("read", invoke_ns, Some((1 + i % 7) * MS), Outcome::Ok),
                }
            })
            .collect()
    }

    fn fault(
        kind: &str,
        start_s: f64,
        heal_s: Option<f64>,
        recovered_s: Option<f64>,
    ) -> FaultWindow {
        let ns = |s: f64| (s * 1e9) as u64;
        FaultWindow {
            kind: kind.to_owned(),
            targets: vec!["kstash-1".to_owned(), "kstash-<2>".to_owned()],
            start_ns: ns(start_s),
            heal_ns: heal_s.map(ns),
            recovered_ns: recovered_s.map(ns),
        }
    }

    fn band_count(html: &str) -> usize {
        html.matches(&format!("opacity=\"{BAND_OPACITY}\"")).count()
    }

    #[test]
    fn writes_page_with_plots_escaping_and_recovery_time() {
        let dir = TempDir::new("page");
        let faults = vec![
            fault("partition-leader", 7.0, Some(10.0), Some(12.5)),
            fault("kill", 14.0, None, None),
        ];
        let summary = serde_json::json!({"valid": true, "note": "a<b & c>d"});
        let path = write_html(
            &dir.0,
            "run <&> one",
            &summary,
            &synthetic_samples(),
            &faults,
            20 * S,
        )
        .expect("report written");

        assert_eq!(path, dir.0.join("report.html"));
        let html = std::fs::read_to_string(&path).expect("report readable");
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("run &lt;&amp;&gt; one"));
        assert!(!html.contains("run <&> one"));
        assert!(html.contains("a&lt;b &amp; c&gt;d"));
        assert!(html.contains("kstash-1, kstash-&lt;2&gt;"));
        assert!(
            html.contains("<td>7</td><td>10</td><td>2.5</td>"),
            "recovery time missing from the fault table"
        );
        assert!(html.contains("<td>14</td><td>end of run</td><td>—</td>"));
        assert_eq!(band_count(&html), 2 * faults.len());
        assert!(!html.contains("<script"));
    }

    #[test]
    fn empty_run_still_makes_a_page() {
        let dir = TempDir::new("empty");
        let path = write_html(&dir.0, "", &serde_json::Value::Null, &[], &[], 0)
            .expect("empty report written");
        let html = std::fs::read_to_string(path).expect("report readable");
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("No faults were injected."));
        assert_eq!(band_count(&html), 0);
        assert!(html.trim_end().ends_with("</html>"));
    }

    #[test]
    fn degenerate_inputs_do_not_fail() {
        // Zero latency, a fault that heals before it starts, ops past end_ns.
        let samples = vec![
            sample("read", 0, Some(0), Outcome::Ok),
            sample("read", 5 * S, Some(S), Outcome::Fail),
        ];
        let faults = vec![fault("pause", 3.0, Some(2.0), Some(1.0))];
        let html =
            render_html("t", &serde_json::json!({}), &samples, &faults, 0).expect("rendered");
        assert_eq!(band_count(&html), 2);
        assert!(html.contains("<td>3</td><td>2</td><td>—</td>"));
    }

    #[test]
    fn shaded_bands_grow_with_the_number_of_faults() {
        let samples = synthetic_samples();
        let mut previous = None;
        for n in 0..4 {
            let faults: Vec<FaultWindow> = (0..n)
                .map(|i| {
                    fault(
                        "kill",
                        2.0 + 4.0 * i as f64,
                        Some(3.0 + 4.0 * i as f64),
                        None,
                    )
                })
                .collect();
            let html = render_html("t", &serde_json::json!({}), &samples, &faults, 20 * S)
                .expect("rendered");
            let count = band_count(&html);
            assert_eq!(count, 2 * n, "one band per fault in each of the two plots");
            if let Some(previous) = previous {
                assert!(count > previous);
            }
            previous = Some(count);
            assert_eq!(fault_bands(&faults, 20 * S).len(), n);
        }
    }

    #[test]
    fn svg_backend_draws_text_without_font_features() {
        let svg = throughput_svg(&synthetic_samples(), &[], 20.0).expect("rendered");
        assert!(svg.contains("<text"));
        assert!(svg.contains(">\nThroughput\n</text>"));
        assert!(svg.contains(">\nseconds since start\n</text>"));
        assert!(svg.contains(">\nok\n</text>"), "legend label missing");
    }

    #[test]
    fn throughput_counts_by_completion_second_and_skips_unanswered() {
        let samples = vec![
            sample("read", 100 * MS, Some(950 * MS), Outcome::Ok), // completes at 1.05 s
            sample("read", 200 * MS, Some(10 * MS), Outcome::Ok),
            sample("write", 300 * MS, None, Outcome::Info),
            sample("write", 400 * MS, Some(2 * S), Outcome::Info),
        ];
        assert_eq!(throughput_counts(&samples, Outcome::Ok, 3.0), vec![1, 1, 0]);
        assert_eq!(
            throughput_counts(&samples, Outcome::Info, 3.0),
            vec![0, 0, 1]
        );
        assert_eq!(
            throughput_counts(&samples, Outcome::Fail, 3.0),
            vec![0, 0, 0]
        );
    }

    #[test]
    fn large_runs_are_subsampled_but_keep_every_fail_and_info() {
        let samples: Vec<Sample> = (0..50_000u64)
            .map(|i| {
                let outcome = if i % 1000 == 0 {
                    Outcome::Fail
                } else {
                    Outcome::Ok
                };
                sample("read", i * MS, Some(MS), outcome)
            })
            .collect();
        let latency = latency_points(&samples);
        assert_eq!(latency.total, 50_000);
        assert_eq!(latency.every_kth_ok, Some(3));
        let fails = latency
            .points
            .iter()
            .filter(|(_, _, o)| *o == Outcome::Fail)
            .count();
        assert_eq!(fails, 50);
        assert!(latency.points.len() <= MAX_LATENCY_POINTS + 50);
        let html =
            render_html("t", &serde_json::json!({}), &samples, &[], 60 * S).expect("rendered");
        assert!(html.contains("one ok op in every 3,"));
    }

    #[test]
    fn percentile_lines_break_at_gaps() {
        let samples = vec![
            sample("read", 0, Some(MS), Outcome::Ok),
            sample("read", 100 * MS, Some(3 * MS), Outcome::Ok),
            sample("read", 2 * S, Some(5 * MS), Outcome::Ok),
        ];
        let runs = ok_percentile_runs(&samples, 0.5, 3.0);
        assert_eq!(runs, vec![vec![(0.5, 1.0)], vec![(2.5, 5.0)]]);
        let p99 = ok_percentile_runs(&samples, 0.99, 3.0);
        assert_eq!(p99[0], vec![(0.5, 3.0)]);
    }

    #[test]
    fn numbers_and_escaping() {
        assert_eq!(trim_number(2.5, 3), "2.5");
        assert_eq!(trim_number(10.0, 3), "10");
        assert_eq!(trim_number(0.0004, 3), "0");
        assert_eq!(
            escape_html("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
