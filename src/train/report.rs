//! What a run tells: one JSON line per logging step and per evaluation in metrics.jsonl, a
//! progress line on stderr, the curves (curves.svg), and the final table on stdout.

use super::metrics::Score;
pub use super::records::Record;
use super::records::Stats;
use crate::data::cs224n::Task;
use crate::error::{Error, Result};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

/// Appends records to metrics.jsonl, keeping them in memory for the curves. The file stays open
/// behind a buffer: per-step PCGrad records wait there (at GPU step rates an open-append-close per
/// step would cost), every other record flushes them and itself, and so does dropping it.
pub struct Metrics {
    path: std::path::PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    pub records: Vec<Record>,
}

impl Metrics {
    /// Opens `path`; a resumed run keeps the records up to its step and drops later ones.
    pub fn open(path: &Path, resume_step: Option<usize>) -> Result<Metrics> {
        let mut records = Vec::new();
        if let Some(step) = resume_step
            && let Ok(text) = std::fs::read_to_string(path)
        {
            records = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Record>(l).ok())
                .filter(|r| r.step() <= step)
                .collect();
        }
        let mut text = String::new();
        for r in &records {
            text += &serde_json::to_string(r).expect("records serialise");
            text.push('\n');
        }
        crate::util::write_atomically(path, text.as_bytes())?;
        let io = |source| Error::Io { path: path.display().to_string(), source };
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(io)?;
        Ok(Metrics { path: path.to_path_buf(), file: std::io::BufWriter::new(file), records })
    }

    pub fn push(&mut self, r: Record) -> Result<()> {
        let line = serde_json::to_string(&r).expect("records serialise") + "\n";
        let io = |source| Error::Io { path: self.path.display().to_string(), source };
        self.file.write_all(line.as_bytes()).map_err(io)?;
        if !matches!(r, Record::Pcgrad(_) | Record::Gradvac(_)) {
            self.file.flush().map_err(io)?;
        }
        self.records.push(r);
        Ok(())
    }

    /// Writes out what the buffer holds.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|source| Error::Io { path: self.path.display().to_string(), source })
    }
}

/// The progress line: step, steps/s, ETA, running loss per task. Redrawn in place on a terminal,
/// printed as plain lines every `every` steps otherwise; silent with --quiet.
pub struct Progress {
    total: usize,
    start: Instant,
    first_step: usize,
    quiet: bool,
    tty: bool,
    every: usize,
}

impl Progress {
    pub fn new(total: usize, first_step: usize, quiet: bool, every: usize) -> Progress {
        Progress {
            total,
            start: Instant::now(),
            first_step,
            quiet,
            tty: std::io::stderr().is_terminal(),
            every: every.max(1),
        }
    }

    pub fn update(&self, step: usize, losses: &[(String, f64)]) {
        if self.quiet || (!self.tty && !step.is_multiple_of(self.every) && step != self.total) {
            return;
        }
        let done = step - self.first_step;
        let secs = self.start.elapsed().as_secs_f64();
        let rate = done as f64 / secs.max(1e-9);
        let eta = (self.total - step) as f64 / rate.max(1e-9);
        let width = 24;
        let filled = (width * step / self.total.max(1)).min(width);
        let bar: String = "=".repeat(filled) + &" ".repeat(width - filled);
        let loss: Vec<String> = losses.iter().map(|(t, l)| format!("{t} {l:.3}")).collect();
        let line =
            format!("[{bar}] {step}/{} {rate:.2} steps/s ETA {} | loss {}", self.total, clock(eta), loss.join(" "));
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            if step == self.total {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }

    /// A message on its own line (evaluations, checkpoints).
    pub fn note(&self, msg: &str) {
        if !self.quiet {
            if self.tty {
                eprint!("\r\x1b[2K");
            }
            eprintln!("{msg}");
        }
    }
}

fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s / 60 % 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}

/// The final table: each task's dev metric and the combined score.
pub fn table(scores: &[Score], combined: f64, step: usize) -> String {
    let mut out = format!("best dev scores (step {step})\n{:<8} {:<10} {:>8}\n", "task", "metric", "value");
    for s in scores {
        out += &format!("{:<8} {:<10} {:>8.4}\n", s.task.name(), s.metric(), s.value);
    }
    out += &format!("{:<8} {:<10} {:>8.4}\n", "all", "combined", combined);
    out
}

/// A series of (step, value) points with its legend.
type Series = Vec<(String, Vec<(f64, f64)>)>;

/// One panel of a chart: its title, series, y range (None: fitted) and whether points get markers.
struct Panel {
    title: String,
    series: Series,
    fixed: Option<(f64, f64)>,
    markers: bool,
}

/// Panels side by side over a shared step axis, as SVG (our own ~60 lines instead of a plotting crate).
fn chart(panels: Vec<Panel>, max_step: f64) -> String {
    let (w, h, pad) = (1000.0, 420.0, 50.0);
    let n = panels.len().max(1) as f64;
    let panel_w = (w - (n + 1.0) * pad) / n;
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let max_step = max_step.max(1.0);
    for (p, panel) in panels.iter().enumerate() {
        let x0 = pad + p as f64 * (panel_w + pad);
        let (y0, ph) = (pad, h - 2.0 * pad);
        let all: Vec<f64> = panel.series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).collect();
        let (lo, hi) = panel.fixed.unwrap_or_else(|| {
            let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if lo.is_finite() && hi > lo { (lo.min(0.0), hi * 1.05) } else { (0.0, 1.0) }
        });
        let sx = |s: f64| x0 + s / max_step * panel_w;
        let sy = |v: f64| y0 + ph - (v - lo) / (hi - lo).max(1e-12) * ph;
        svg += &format!("<text x=\"{}\" y=\"{}\" font-size=\"14\">{}</text>\n", x0, y0 - 12.0, panel.title);
        svg += &format!(
            "<rect x=\"{x0}\" y=\"{y0}\" width=\"{panel_w}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>\n"
        );
        for i in 0..=4 {
            let v = lo + (hi - lo) * i as f64 / 4.0;
            svg += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.2}</text>\n", x0 - 4.0, sy(v) + 4.0);
        }
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">step {}</text>\n",
            x0 + panel_w,
            y0 + ph + 18.0,
            max_step
        );
        for (i, (name, pts)) in panel.series.iter().enumerate() {
            let c = colors[i % colors.len()];
            let d: Vec<String> = pts.iter().map(|(s, v)| format!("{:.1},{:.1}", sx(*s), sy(*v))).collect();
            if !d.is_empty() {
                svg += &format!(
                    "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
                    d.join(" ")
                );
            }
            if panel.markers {
                for (s, v) in pts {
                    svg += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>\n", sx(*s), sy(*v));
                }
            }
            svg +=
                &format!("<text x=\"{}\" y=\"{}\" fill=\"{c}\">{name}</text>\n", x0 + 8.0, y0 + 16.0 + 14.0 * i as f64);
        }
    }
    svg + "</svg>\n"
}

/// curves.svg: training loss per task (left) and dev metrics (right) over steps.
pub fn write_curves(path: &Path, records: &[Record], tasks: &[Task]) -> Result<()> {
    let max_step = records.iter().map(Record::step).max().unwrap_or(1) as f64;
    let mut loss_series = Vec::new();
    let mut eval_series = Vec::new();
    for t in tasks {
        let name = t.name().to_string();
        let pts = records
            .iter()
            .filter_map(|r| match r {
                Record::Train { step, loss, .. } => loss.get(&name).map(|l| (*step as f64, *l)),
                _ => None,
            })
            .collect();
        loss_series.push((name.clone(), pts));
        let pts = records
            .iter()
            .filter_map(|r| match r {
                Record::Eval { step, metrics, .. } => metrics.get(&name).map(|v| (*step as f64, *v)),
                _ => None,
            })
            .collect();
        eval_series.push((format!("{name} dev"), pts));
    }
    let combined = records
        .iter()
        .filter_map(|r| match r {
            Record::Eval { step, combined, .. } => Some((*step as f64, *combined)),
            _ => None,
        })
        .collect();
    eval_series.push(("combined".to_string(), combined));
    let panels = vec![
        Panel { title: "training loss per task".into(), series: loss_series, fixed: None, markers: false },
        Panel {
            title: "dev metrics (accuracy; Pearson r for STS)".into(),
            series: eval_series,
            fixed: Some((-0.1, 1.0)),
            markers: true,
        },
    ];
    crate::util::write_atomically(path, chart(panels, max_step).as_bytes())
}

/// Steps averaged per point of a method's plot: one step's fraction is a multiple of 1/(k(k−1)).
const PCGRAD_SMOOTHING: usize = 20;

/// pcgrad.svg: the cosine of every task pair (left) and the fraction of pairs projected (right),
/// each a running mean over PCGRAD_SMOOTHING steps.
pub fn write_pcgrad(path: &Path, records: &[Record]) -> Result<()> {
    let stats: Vec<&Stats> =
        records.iter().filter_map(|r| if let Record::Pcgrad(s) = r { Some(s) } else { None }).collect();
    write_method_plot(path, &stats, "projected")
}

/// A gradient method's plot from its per-step statistics: the cosine of every task pair and,
/// where the method keeps them, its targets (left), and the fraction of pairs `changed` (right),
/// each a running mean over PCGRAD_SMOOTHING steps.
pub fn write_method_plot(path: &Path, stats: &[&Stats], changed: &str) -> Result<()> {
    let smooth = |pts: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        (0..pts.len())
            .map(|i| {
                let w = &pts[i.saturating_sub(PCGRAD_SMOOTHING - 1)..=i];
                (pts[i].0, w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64)
            })
            .collect()
    };
    let series = |get: &dyn Fn(&Stats) -> &std::collections::BTreeMap<String, f64>, prefix: &str| -> Series {
        let names: std::collections::BTreeSet<&String> = stats.iter().flat_map(|s| get(s).keys()).collect();
        names
            .into_iter()
            .map(|name| {
                let pts = stats.iter().filter_map(|s| get(s).get(name).map(|v| (s.step as f64, *v))).collect();
                (format!("{prefix}{name}"), smooth(pts))
            })
            .collect()
    };
    let mut cos = series(&|s| &s.cosine, "");
    cos.extend(series(&|s| &s.target, "target "));
    let m = cos.iter().flat_map(|(_, p)| p.iter().map(|v| v.1.abs())).fold(0.0, f64::max);
    let m = (m * 1.1).clamp(0.05, 1.0);
    let frac = smooth(stats.iter().map(|s| (s.step as f64, s.projected_fraction)).collect());
    let max_step = stats.iter().map(|s| s.step).max().unwrap_or(1) as f64;
    let panels = vec![
        Panel {
            title: format!("cosine between task gradients (mean of {PCGRAD_SMOOTHING} steps)"),
            series: cos,
            fixed: Some((-m, m)),
            markers: false,
        },
        Panel {
            title: format!("fraction of task pairs {changed} (mean of {PCGRAD_SMOOTHING} steps)"),
            series: vec![(changed.into(), frac)],
            fixed: Some((0.0, 1.0)),
            markers: false,
        },
    ];
    crate::util::write_atomically(path, chart(panels, max_step).as_bytes())
}
