//! SVG plots of a report, drawn with plotters' SVG backend: round-trip
//! latency against clients for raw TCP and the session on each runtime (the
//! paper's Fig. 9, one plot per service time), and bulk throughput per
//! runtime and release policy.

use std::io;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::{Report, Row};

const COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Writes the plots the report has data for into `dir` (created if
/// missing); returns the files written.
pub fn write_plots(report: &Report, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let lat: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.experiment == "latency" && r.metric == "rtt_p50")
        .collect();
    let mut services: Vec<String> = lat
        .iter()
        .filter_map(|r| field(&r.variant, "service"))
        .collect();
    services.dedup();
    services.sort();
    services.dedup();
    for svc in services {
        let path = dir.join(format!("latency-service-{svc}.svg"));
        latency_plot(&lat, &svc, &path).map_err(err)?;
        out.push(path);
    }
    let bulk: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.experiment == "bulk" && r.metric == "throughput")
        .collect();
    if !bulk.is_empty() {
        let path = dir.join("bulk-throughput.svg");
        bulk_plot(&bulk, &path).map_err(err)?;
        out.push(path);
    }
    Ok(out)
}

/// `clients=100/service=1ms` → field "service" = "1ms".
fn field(variant: &str, name: &str) -> Option<String> {
    variant
        .split('/')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
}

type Fallible = Result<(), Box<dyn std::error::Error>>;

fn latency_plot(rows: &[&Row], svc: &str, path: &Path) -> Fallible {
    let rows: Vec<&&Row> = rows
        .iter()
        .filter(|r| field(&r.variant, "service").as_deref() == Some(svc))
        .collect();
    let clients = |r: &Row| field(&r.variant, "clients").and_then(|c| c.parse::<f64>().ok());
    let max_c = rows.iter().filter_map(|r| clients(r)).fold(1.0, f64::max);
    let max_y = rows
        .iter()
        .flat_map(|r| [r.raw.unwrap_or(0.0), r.session])
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Round-trip time p50, 20-byte request/reply, service time {svc}"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0.5f64..max_c * 2.0).log_scale(),
            (1.0f64..max_y * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc("RTT p50 (µs)")
        .draw()?;
    let mut runtimes: Vec<&str> = rows.iter().map(|r| r.runtime.as_str()).collect();
    runtimes.sort();
    runtimes.dedup();
    for (i, rt) in runtimes.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<(f64, f64, f64)> = rows
            .iter()
            .filter(|r| r.runtime == *rt)
            .filter_map(|r| Some((clients(r)?, r.raw.unwrap_or(f64::NAN), r.session)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let raw: Vec<(f64, f64)> = pts
            .iter()
            .map(|p| (p.0, p.1))
            .filter(|p| p.1.is_finite())
            .collect();
        let ses: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.2)).collect();
        chart
            .draw_series(LineSeries::new(raw.clone(), color.stroke_width(1)))?
            .label(format!("{rt} raw TCP"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1))
            });
        chart.draw_series(
            raw.iter()
                .map(|&p| Circle::new(p, 3, color.stroke_width(1))),
        )?;
        chart
            .draw_series(LineSeries::new(ses.clone(), color.stroke_width(3)))?
            .label(format!("{rt} session"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart.draw_series(
            ses.iter()
                .map(|&p| TriangleMarker::new(p, 5, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

fn bulk_plot(rows: &[&Row], path: &Path) -> Fallible {
    let n = rows.len();
    let max_y = rows
        .iter()
        .flat_map(|r| [r.raw.unwrap_or(0.0), r.session])
        .filter(|v| v.is_finite())
        .fold(0.1, f64::max);
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.runtime,
                r.variant.split('/').next().unwrap_or("")
            )
        })
        .collect();
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Bulk throughput over loopback, 64 KiB writes (session/raw above each pair)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..max_y * 1.3)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 && i < labels.len() {
                labels[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc("GiB/s")
        .draw()?;
    let raw_style = RGBColor(150, 150, 150).filled();
    let ses_style = COLORS[0].filled();
    chart
        .draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
            let v = r.raw?;
            Some(Rectangle::new(
                [(i as f64 + 0.1, 0.0), (i as f64 + 0.48, v)],
                raw_style,
            ))
        }))?
        .label("raw TCP")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], raw_style));
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            Rectangle::new(
                [(i as f64 + 0.52, 0.0), (i as f64 + 0.9, r.session)],
                ses_style,
            )
        }))?
        .label("session")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], ses_style));
    chart.draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
        let ratio = r.ratio?;
        Some(Text::new(
            format!("{ratio:.2}×"),
            (
                i as f64 + 0.5,
                r.session.max(r.raw.unwrap_or(0.0)) + max_y * 0.04,
            ),
            ("sans-serif", 14).into_font(),
        ))
    }))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
