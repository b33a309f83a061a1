//! `shoal dev-cluster sim-plot`: how each cost the simulator measures grows
//! with the number of nodes, drawn as SVG charts from the JSON lines that
//! `sim --record FILE` appends (one line per run; the committed runs are in
//! docs/scale/). Each chart puts nodes on the x axis, so a cost that grows
//! faster than the cluster shows as a bending line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use plotters::prelude::*;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct SimPlotArgs {
    /// The runs, one JSON report per line (from `sim --record FILE`).
    #[arg(long)]
    pub data: PathBuf,
    /// Directory to write the SVG files to.
    #[arg(long)]
    pub out: PathBuf,
}

/// One line on a chart: a label and a field of each run (a JSON pointer
/// into the report, scaled).
struct Series {
    label: &'static str,
    pointer: &'static str,
    scale: f64,
}

struct Chart {
    file: &'static str,
    title: &'static str,
    unit: &'static str,
    series: &'static [Series],
}

const CHARTS: &[Chart] = &[
    Chart {
        file: "join.svg",
        title: "Join: every node ready",
        unit: "seconds",
        series: &[Series { label: "time to join", pointer: "/join", scale: 0.001 }],
    },
    Chart {
        file: "placement-rate.svg",
        title: "Placement: one service, every replica running",
        unit: "placements per second",
        series: &[Series { label: "end to end", pointer: "/placements_per_second", scale: 1.0 }],
    },
    Chart {
        file: "cost-per-step.svg",
        title: "Managers' CPU per node joined and per task placed",
        unit: "CPU milliseconds",
        series: &[
            Series { label: "per node joined", pointer: "/join_cost/cpu_seconds", scale: 1.0 },
            Series { label: "per task placed", pointer: "/placement_cost/cpu_seconds", scale: 1.0 },
        ],
    },
    Chart {
        file: "steady-cpu.svg",
        title: "Steady state: CPU while nothing changes (100 = one core)",
        unit: "percent of one core",
        series: &[
            Series { label: "managers", pointer: "/steady/managers_cpu_percent", scale: 1.0 },
            Series { label: "simulated nodes", pointer: "/steady/nodes_cpu_percent", scale: 1.0 },
        ],
    },
    Chart {
        file: "churn.svg",
        title: "Churn: nodes lost, leader killed",
        unit: "seconds",
        series: &[
            Series { label: "lost nodes' tasks running elsewhere", pointer: "/reschedule", scale: 0.001 },
            Series { label: "new leader commits a write", pointer: "/failover_write", scale: 0.001 },
            Series { label: "every node back in session", pointer: "/failover_sessions", scale: 0.001 },
        ],
    },
    Chart {
        file: "memory.svg",
        title: "Memory",
        unit: "MiB",
        series: &[
            Series { label: "managers, per 100,000 tasks", pointer: "/rss_per_100k_tasks", scale: 1.0 / 1048576.0 },
            Series { label: "one simulated node (x 1,000)", pointer: "/memory_per_node", scale: 1000.0 / 1048576.0 },
        ],
    },
];

const COLOURS: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44)];

pub fn run(args: &SimPlotArgs) -> anyhow::Result<()> {
    let runs = read_runs(&args.data)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("could not create {}", args.out.display()))?;
    for chart in CHARTS {
        let path = args.out.join(chart.file);
        draw(chart, &runs, &path).map_err(|e| anyhow::anyhow!("could not draw {}: {e}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// The recorded runs, ordered by their number of nodes.
fn read_runs(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    let mut runs = Vec::new();
    for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let run: Value = serde_json::from_str(line)
            .with_context(|| format!("line {} of {} is not a simulator report; record runs with `sim --record FILE`", number + 1, path.display()))?;
        runs.push(run);
    }
    if runs.is_empty() {
        bail!("{} holds no runs; record some with `shoal dev-cluster sim --nodes N --record {}`", path.display(), path.display());
    }
    runs.sort_by_key(|r| r["nodes"].as_u64().unwrap_or(0));
    Ok(runs)
}

/// A series' points: (nodes, value) for every run that has the field.
fn points(runs: &[Value], series: &Series) -> Vec<(f64, f64)> {
    runs.iter()
        .filter_map(|run| Some((run["nodes"].as_f64()?, run.pointer(series.pointer)?.as_f64()? * series.scale)))
        .collect()
}

fn draw(chart: &Chart, runs: &[Value], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let lines: Vec<(&Series, Vec<(f64, f64)>)> = chart.series.iter().map(|s| (s, points(runs, s))).collect();
    let all = lines.iter().flat_map(|(_, p)| p.iter());
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = all.map(|p| p.1).fold(f64::MIN_POSITIVE, f64::max) * 1.15;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut plot = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    plot.configure_mesh().x_desc("simulated nodes").y_desc(chart.unit).draw()?;
    for ((series, points), colour) in lines.iter().zip(COLOURS.iter().cycle()) {
        let colour = *colour;
        plot.draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))?
            .label(series.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        plot.draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
    }
    plot.configure_series_labels().position(SeriesLabelPosition::UpperLeft).background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
