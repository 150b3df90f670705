//! `report`: one self-contained HTML page (tables and inline SVG plots, no scripts, no server)
//! from the JSON reports of earlier runs. Each run is labelled by its file name, so
//! `results/parley-fanout.json` and `results/nats-fanout.json` sit side by side.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Where to write the page.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
    /// JSON reports written by `--json`.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_BOTTOM: f64 = 40.0;

/// A run: its label (the file's name) and its report.
#[derive(Clone)]
struct Run {
    label: String,
    report: Value,
}

pub fn write(options: &Options) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for path in &options.reports {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let report: Value =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let label = path.file_stem().map_or_else(
            || path.display().to_string(),
            |stem| stem.to_string_lossy().into_owned(),
        );
        runs.push(Run { label, report });
    }
    std::fs::write(&options.out, render(&runs))
        .with_context(|| format!("write {}", options.out.display()))?;
    println!("report: {} runs -> {}", runs.len(), options.out.display());
    Ok(())
}

fn render(runs: &[Run]) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Parley load test report</title>\
         <style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1000px}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
         th:first-child,td:first-child{text-align:left}svg{display:block;margin:1em 0}</style></head><body>\
         <h1>Parley load test report</h1>",
    );
    let of = |scenario: &str| -> Vec<&Run> {
        runs.iter()
            .filter(|run| run.report["scenario"] == scenario)
            .collect()
    };
    fanout_section(&mut html, &of("fanout"));
    connections_section(&mut html, &of("connections"));
    churn_section(&mut html, &of("churn"));
    p2p_section(&mut html, &of("p2p"));
    html.push_str("</body></html>\n");
    html
}

fn fanout_section(html: &mut String, runs: &[&Run]) {
    if runs.is_empty() {
        return;
    }
    html.push_str("<h2>Fan-out</h2>");
    // Ratios are to Parley's run when there is one, else to the first.
    let base_run = runs
        .iter()
        .find(|run| run.report["system"] == "parley")
        .unwrap_or(&runs[0]);
    let base = base_run.report["deliveries_per_server_cpu_second"]
        .as_f64()
        .unwrap_or(0.0);
    table(
        html,
        &[
            "run",
            "system",
            "channels × members",
            "msg/s × bytes",
            "delivered / expected",
            "lost",
            "refused",
            "deliveries/s",
            "deliveries per server CPU-s",
            "ratio to Parley",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "server CPU s",
            "generator CPU s",
        ],
        runs.iter().map(|run| {
            let r = &run.report;
            let per_cpu = r["deliveries_per_server_cpu_second"]
                .as_f64()
                .unwrap_or(0.0);
            vec![
                escape(&run.label),
                text(&r["system"]),
                format!("{} × {}", r["channels"], r["members_per_channel"]),
                format!("{} × {}", r["rate"], r["size_bytes"]),
                format!("{} / {}", r["delivered"], r["expected_deliveries"]),
                r["lost"].to_string(),
                r["refused"].as_u64().unwrap_or(0).to_string(),
                grouped(r["deliveries_per_second"].as_f64().unwrap_or(0.0)),
                grouped(per_cpu),
                if base > 0.0 {
                    format!("{:.2}", per_cpu / base)
                } else {
                    "–".into()
                },
                r["latency"]["p50_ms"].to_string(),
                r["latency"]["p90_ms"].to_string(),
                r["latency"]["p99_ms"].to_string(),
                r["latency"]["p999_ms"].to_string(),
                r["latency"]["max_ms"].to_string(),
                fixed(&r["server_cpu_seconds"]),
                fixed(&r["generator_cpu_seconds"]),
            ]
        }),
    );
    let percentiles = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"];
    let series: Vec<(String, Vec<f64>)> = runs
        .iter()
        .map(|run| {
            let values = percentiles
                .iter()
                .map(|p| run.report["latency"][p].as_f64().unwrap_or(0.0))
                .collect();
            (run.label.clone(), values)
        })
        .collect();
    html.push_str(&grouped_bars(
        "End-to-end latency (ms, log scale)",
        &["p50", "p90", "p99", "p99.9", "max"],
        &series,
    ));
    let timeline = |key: &str| -> Vec<(String, Vec<(f64, f64)>)> {
        runs.iter()
            .map(|run| {
                let points = run.report["timeline"]
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .map(|row| {
                                (
                                    row["second"].as_f64().unwrap_or(0.0),
                                    row[key].as_f64().unwrap_or(0.0),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (run.label.clone(), points)
            })
            .collect()
    };
    html.push_str(&lines(
        "Deliveries per second over the run",
        "second",
        &timeline("deliveries"),
    ));
    html.push_str(&lines(
        "Mean latency per second over the run (ms)",
        "second",
        &timeline("mean_latency_ms"),
    ));
    html.push_str(&bars(
        "Deliveries per server CPU-second",
        &values(runs, |r| {
            r["deliveries_per_server_cpu_second"]
                .as_f64()
                .unwrap_or(0.0)
        }),
    ));
}

fn connections_section(html: &mut String, runs: &[&Run]) {
    if runs.is_empty() {
        return;
    }
    html.push_str("<h2>Idle connections</h2>");
    table(
        html,
        &[
            "run",
            "system",
            "connections",
            "failed",
            "KB per connection",
            "idle CPU s/s",
            "login p50 ms",
            "login p99 ms",
            "RSS after MB",
        ],
        runs.iter().map(|run| {
            let r = &run.report;
            vec![
                escape(&run.label),
                text(&r["system"]),
                r["connections"].to_string(),
                r["failed"].to_string(),
                format!("{:.1}", kb_per_connection(r)),
                format!(
                    "{:.3}",
                    r["idle_cpu_seconds_per_second"].as_f64().unwrap_or(0.0)
                ),
                r["login_latency"]["p50_ms"].to_string(),
                r["login_latency"]["p99_ms"].to_string(),
                format!(
                    "{:.1}",
                    r["server_rss_after_bytes"].as_f64().unwrap_or(0.0) / 1e6
                ),
            ]
        }),
    );
    html.push_str(&bars(
        "Server memory per idle connection (KB)",
        &values(runs, kb_per_connection),
    ));
}

fn kb_per_connection(report: &Value) -> f64 {
    report["server_bytes_per_connection"]
        .as_f64()
        .unwrap_or(0.0)
        / 1024.0
}

fn churn_section(html: &mut String, runs: &[&Run]) {
    if runs.is_empty() {
        return;
    }
    html.push_str("<h2>Churn</h2>");
    table(
        html,
        &[
            "run",
            "system",
            "per second",
            "connections",
            "failed",
            "login + join p50 ms",
            "p99 ms",
            "max ms",
            "server CPU s",
        ],
        runs.iter().map(|run| {
            let r = &run.report;
            let latency = &r["login_and_join_latency"];
            vec![
                escape(&run.label),
                text(&r["system"]),
                r["rate"].to_string(),
                r["connections"].to_string(),
                r["failed"].to_string(),
                latency["p50_ms"].to_string(),
                latency["p99_ms"].to_string(),
                latency["max_ms"].to_string(),
                fixed(&r["server_cpu_seconds"]),
            ]
        }),
    );
}

fn p2p_section(html: &mut String, runs: &[&Run]) {
    if runs.is_empty() {
        return;
    }
    html.push_str("<h2>Peer-to-peer</h2>");
    table(
        html,
        &[
            "run",
            "users",
            "sent",
            "acknowledged",
            "lost",
            "p50 ms",
            "p99 ms",
            "max ms",
            "server CPU s",
        ],
        runs.iter().map(|run| {
            let r = &run.report;
            vec![
                escape(&run.label),
                r["users"].to_string(),
                r["sent"].to_string(),
                r["acknowledged"].to_string(),
                r["lost"].to_string(),
                r["latency"]["p50_ms"].to_string(),
                r["latency"]["p99_ms"].to_string(),
                r["latency"]["max_ms"].to_string(),
                fixed(&r["server_cpu_seconds"]),
            ]
        }),
    );
}

/// A table: the header row, then a row per item of `rows` (cells already escaped).
fn table(html: &mut String, headers: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    html.push_str("<table><tr>");
    for header in headers {
        let _ = write!(html, "<th>{}</th>", escape(header));
    }
    html.push_str("</tr>");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
}

/// Each run's label with the value `of` its report.
fn values(runs: &[&Run], of: impl Fn(&Value) -> f64) -> Vec<(String, f64)> {
    runs.iter()
        .map(|run| (run.label.clone(), of(&run.report)))
        .collect()
}

/// A line per series over a linear x and y axis.
fn lines(title: &str, x_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let points = series.iter().flat_map(|(_, points)| points.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = nice_max(points.map(|p| p.1).fold(0.0, f64::max));
    let (plot_w, plot_h) = (WIDTH - MARGIN_LEFT - 20.0, HEIGHT - MARGIN_BOTTOM - 30.0);
    let x = |value: f64| MARGIN_LEFT + value / x_max * plot_w;
    let y = |value: f64| 30.0 + plot_h - value / y_max * plot_h;
    let mut svg = svg_start(title);
    axes(&mut svg, plot_w, plot_h);
    for tick in 0..=4 {
        let value = y_max * f64::from(tick) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{}</text>",
            MARGIN_LEFT - 6.0,
            y(value) + 4.0,
            grouped(value)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{x_label} (0–{x_max:.0})</text>",
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 8.0
    );
    for (index, (label, points)) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        legend(&mut svg, index, label, color);
    }
    svg.push_str("</svg>");
    svg
}

/// One bar per run, on a linear axis.
fn bars(title: &str, values: &[(String, f64)]) -> String {
    let series: Vec<(String, Vec<f64>)> = values
        .iter()
        .map(|(label, value)| (label.clone(), vec![*value]))
        .collect();
    bar_chart(title, &[""], &series, false)
}

/// Groups of bars (one per series) for each category, on a log axis.
fn grouped_bars(title: &str, categories: &[&str], series: &[(String, Vec<f64>)]) -> String {
    bar_chart(title, categories, series, true)
}

fn bar_chart(title: &str, categories: &[&str], series: &[(String, Vec<f64>)], log: bool) -> String {
    let all = series.iter().flat_map(|(_, values)| values.iter().copied());
    let (plot_w, plot_h) = (WIDTH - MARGIN_LEFT - 20.0, HEIGHT - MARGIN_BOTTOM - 30.0);
    let (low, high) = if log {
        let min = all.clone().filter(|v| *v > 0.0).fold(f64::MAX, f64::min);
        let max = all.fold(0.0, f64::max);
        let low = if min == f64::MAX {
            0.0
        } else {
            min.log10().floor()
        };
        (low, max.log10().ceil().max(low + 1.0))
    } else {
        (0.0, nice_max(all.fold(0.0, f64::max)))
    };
    let height_of = |value: f64| {
        let scaled = if log {
            if value <= 0.0 {
                0.0
            } else {
                (value.log10() - low) / (high - low)
            }
        } else {
            value / high
        };
        scaled.clamp(0.0, 1.0) * plot_h
    };
    let mut svg = svg_start(title);
    axes(&mut svg, plot_w, plot_h);
    let ticks: Vec<f64> = if log {
        (low as i32..=high as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=4).map(|t| high * f64::from(t) / 4.0).collect()
    };
    for tick in ticks {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{}</text>",
            MARGIN_LEFT - 6.0,
            30.0 + plot_h - height_of(tick) + 4.0,
            grouped(tick)
        );
    }
    let group_w = plot_w / categories.len() as f64;
    let bar_w = (group_w * 0.8 / series.len().max(1) as f64).min(60.0);
    for (c, category) in categories.iter().enumerate() {
        let group_x = MARGIN_LEFT + group_w * c as f64 + group_w * 0.1;
        for (s, (_, values)) in series.iter().enumerate() {
            let value = values.get(c).copied().unwrap_or(0.0);
            let h = height_of(value);
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}</title></rect>",
                group_x + bar_w * s as f64,
                30.0 + plot_h - h,
                bar_w * 0.9,
                COLORS[s % COLORS.len()],
                grouped(value)
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
            group_x + group_w * 0.4,
            HEIGHT - 22.0,
            escape(category)
        );
    }
    for (s, (label, _)) in series.iter().enumerate() {
        legend(&mut svg, s, label, COLORS[s % COLORS.len()]);
    }
    svg.push_str("</svg>");
    svg
}

fn svg_start(title: &str) -> String {
    format!(
        "<h3>{}</h3><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">",
        escape(title)
    )
}

fn axes(svg: &mut String, plot_w: f64, plot_h: f64) {
    let _ = write!(
        svg,
        "<path d=\"M{MARGIN_LEFT},30 V{:.1} H{:.1}\" stroke=\"#333\" fill=\"none\"/>",
        30.0 + plot_h,
        MARGIN_LEFT + plot_w
    );
}

fn legend(svg: &mut String, index: usize, label: &str, color: &str) {
    let x = MARGIN_LEFT + 10.0 + (index % 3) as f64 * 210.0;
    let y = 12.0 + (index / 3) as f64 * 14.0;
    let _ = write!(
        svg,
        "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
        y - 9.0,
        x + 14.0,
        y,
        escape(label)
    );
}

/// The smallest of 1, 2, 5 × 10ⁿ at or above `value` (an axis's top).
fn nice_max(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|top| *top >= value)
        .unwrap_or(10.0 * magnitude)
}

/// A number with thousands separators (three decimals below 1, none from 100 on).
fn grouped(value: f64) -> String {
    if value.abs() < 1.0 {
        return format!("{value:.3}");
    }
    if value.abs() < 100.0 {
        return format!("{value:.1}");
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

fn fixed(value: &Value) -> String {
    format!("{:.2}", value.as_f64().unwrap_or(0.0))
}

fn text(value: &Value) -> String {
    escape(value.as_str().unwrap_or("parley"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(120_000.0), 200_000.0);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(1_234_567.0), "1,234,567");
        assert_eq!(grouped(12.34), "12.3");
        assert_eq!(grouped(0.5), "0.500");
    }

    #[test]
    fn a_page_holds_every_run_and_its_plots() {
        let fanout = |system: &str, per_cpu: f64| {
            serde_json::json!({
                "scenario": "fanout", "system": system, "channels": 1, "members_per_channel": 10,
                "rate": 100.0, "size_bytes": 100, "delivered": 900, "expected_deliveries": 900,
                "lost": 0, "deliveries_per_second": 90.0, "deliveries_per_server_cpu_second": per_cpu,
                "latency": {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "p999_ms": 4.0, "max_ms": 5.0},
                "server_cpu_seconds": 0.1, "generator_cpu_seconds": 0.2,
                "timeline": [{"second": 0, "deliveries": 450, "mean_latency_ms": 1.0, "max_latency_ms": 5.0}],
            })
        };
        let runs = [
            Run {
                label: "parley-fanout".into(),
                report: fanout("parley", 2000.0),
            },
            Run {
                label: "nats-fanout".into(),
                report: fanout("nats", 1000.0),
            },
        ];
        let html = render(&runs);
        assert!(html.contains("<td>parley-fanout</td><td>parley</td>"));
        assert!(html.contains("<td>nats-fanout</td><td>nats</td>"));
        // NATS at half Parley's deliveries per CPU-second, whichever comes first.
        assert!(html.contains("<td>0.50</td>"), "{html}");
        let reversed = render(&[runs[1].clone(), runs[0].clone()]);
        assert!(reversed.contains("<td>0.50</td>"), "{reversed}");
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains("<polyline"));
    }
}
