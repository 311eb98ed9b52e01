//! Analysis of dev predictions against gold labels: for a classification task the confusion
//! matrix with per-class precision, recall and F1; for a regression task the (prediction, gold)
//! pairs and Pearson r. A plain-text report (analysis.txt) and one plot per task
//! (`confusion-<task>.svg`, `<task>-scatter.svg`), hand-written SVG in the style of curves.svg.

use super::metrics::pearson;
use crate::data::cs224n::{Example, Kind, Label, Prediction, Task};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The report's file name in a run (or `engine eval`) folder.
pub const REPORT: &str = "analysis.txt";

/// A classification task's confusion matrix: `counts[g][p]` examples of gold class g predicted
/// as p. (K, K), rows gold, columns predicted.
#[derive(Clone, Debug, PartialEq)]
pub struct Confusion {
    pub counts: Vec<Vec<usize>>,
}

/// One class's row of the report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassStats {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Gold examples of the class.
    pub support: usize,
}

/// A ratio that is 0 when its denominator is (sklearn's `zero_division=0`): a class never
/// predicted has precision 0, one absent from gold recall 0, never NaN.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

impl Confusion {
    /// The matrix of `k` classes from (gold, predicted) pairs, each below `k`.
    pub fn from_pairs(k: usize, pairs: &[(usize, usize)]) -> Confusion {
        let mut counts = vec![vec![0; k]; k];
        for &(g, p) in pairs {
            counts[g][p] += 1;
        }
        Confusion { counts }
    }

    pub fn classes(&self) -> usize {
        self.counts.len()
    }

    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    /// The diagonal's share of all examples (0 without examples).
    pub fn accuracy(&self) -> f64 {
        ratio((0..self.classes()).map(|c| self.counts[c][c]).sum(), self.total())
    }

    /// Precision tp/(tp+fp), recall tp/(tp+fn) and F1 2tp/(2tp+fp+fn) (their harmonic mean) per
    /// class, each 0 where its denominator is 0.
    pub fn per_class(&self) -> Vec<ClassStats> {
        (0..self.classes())
            .map(|c| {
                let tp = self.counts[c][c];
                let predicted: usize = self.counts.iter().map(|row| row[c]).sum();
                let support: usize = self.counts[c].iter().sum();
                ClassStats {
                    precision: ratio(tp, predicted),
                    recall: ratio(tp, support),
                    f1: ratio(2 * tp, predicted + support),
                    support,
                }
            })
            .collect()
    }

    /// The unweighted means over classes of precision, recall and F1 (macro-F1 is the mean of
    /// the classes' F1, as sklearn's `macro avg`).
    pub fn macro_avg(&self) -> (f64, f64, f64) {
        let stats = self.per_class();
        let n = stats.len().max(1) as f64;
        let mean = |f: fn(&ClassStats) -> f64| stats.iter().map(f).sum::<f64>() / n;
        (mean(|s| s.precision), mean(|s| s.recall), mean(|s| s.f1))
    }
}

/// A regression task's predictions against gold.
#[derive(Clone, Debug, PartialEq)]
pub struct Scatter {
    /// (prediction, gold) per example.
    pub points: Vec<(f64, f64)>,
    pub pearson: f64,
}

impl Scatter {
    pub fn new(points: Vec<(f64, f64)>) -> Scatter {
        let (p, g): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
        Scatter { pearson: pearson(&p, &g), points }
    }

    /// The smallest and largest of the first (`prediction`) or second coordinate.
    fn range(&self, prediction: bool) -> (f64, f64) {
        let v = self.points.iter().map(|&(p, g)| if prediction { p } else { g });
        v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)))
    }
}

/// One task's analysis.
#[derive(Clone, Debug, PartialEq)]
pub enum Analysis {
    Classes { task: Task, confusion: Confusion },
    Regression { task: Task, scatter: Scatter },
}

impl Analysis {
    pub fn task(&self) -> Task {
        match self {
            Analysis::Classes { task, .. } | Analysis::Regression { task, .. } => *task,
        }
    }

    /// The plot's file name and its SVG.
    pub fn plot(&self) -> (String, String) {
        match self {
            Analysis::Classes { task, confusion } => (plot_name(*task), confusion_svg(*task, confusion)),
            Analysis::Regression { task, scatter } => (plot_name(*task), scatter_svg(*task, scatter)),
        }
    }
}

/// A task's plot: `confusion-<task>.svg` for classes, `<task>-scatter.svg` for regression.
pub fn plot_name(task: Task) -> String {
    match task.kind() {
        Kind::Regression => format!("{task}-scatter.svg"),
        Kind::Classes(_) | Kind::Binary => format!("confusion-{task}.svg"),
    }
}

/// Every file `write` may create in a folder (what `--overwrite` clears with a run).
pub fn file_names() -> Vec<String> {
    std::iter::once(REPORT.to_string()).chain(Task::all().into_iter().map(plot_name)).collect()
}

/// The analysis of `predictions` (in the examples' order) against the examples' labels; None
/// when the examples are unlabelled (test). Binary tasks count as classes 0 (no) and 1 (yes).
pub fn analyse(task: Task, examples: &[Example], predictions: &[(String, Prediction)]) -> Result<Option<Analysis>> {
    if examples.is_empty() || examples.iter().any(|e| e.label.is_none()) {
        return Ok(None);
    }
    if examples.len() != predictions.len() {
        return Err(Error::value(
            "analysis",
            format!("{task}: {} predictions for {} examples", predictions.len(), examples.len()),
        ));
    }
    let pairs = examples.iter().zip(predictions).map(|(e, (_, p))| (e, e.label.expect("checked above"), *p));
    let bad = |e: &Example, l: Label, p: Prediction| {
        Error::value("analysis", format!("{task} example {:?}: gold {l:?} and prediction {p:?} do not fit", e.id))
    };
    Ok(Some(match task.kind() {
        Kind::Regression => {
            let points = pairs
                .map(|(e, l, p)| match (l, p) {
                    (Label::Score(g), Prediction::Score(s)) => Ok((s, g as f64)),
                    _ => Err(bad(e, l, p)),
                })
                .collect::<Result<_>>()?;
            Analysis::Regression { task, scatter: Scatter::new(points) }
        }
        kind => {
            let k = match kind {
                Kind::Classes(k) => k as usize,
                _ => 2,
            };
            let pairs = pairs
                .map(|(e, l, p)| match (l, p) {
                    (Label::Class(g), Prediction::Class(c)) if (g as usize) < k && (c as usize) < k => {
                        Ok((g as usize, c as usize))
                    }
                    (Label::Binary(g), Prediction::Binary(b)) => Ok(((g > 0.5) as usize, b as usize)),
                    _ => Err(bad(e, l, p)),
                })
                .collect::<Result<Vec<_>>>()?;
            Analysis::Classes { task, confusion: Confusion::from_pairs(k, &pairs) }
        }
    }))
}

/// The plain-text report: one table per task.
pub fn report(analyses: &[Analysis]) -> String {
    analyses.iter().map(table).collect::<Vec<_>>().join("\n")
}

/// One task's table: per-class precision, recall, F1 and support, the macro average and the
/// accuracy, then the confusion matrix; for regression, Pearson r and the ranges.
fn table(a: &Analysis) -> String {
    match a {
        Analysis::Classes { task, confusion: m } => {
            let (p, r, f1) = m.macro_avg();
            let n = m.total();
            let mut out = format!("{task}: {n} examples, accuracy {:.4}, macro-F1 {f1:.4}\n", m.accuracy());
            out += &format!("{:<10} {:>9} {:>9} {:>9} {:>9}\n", "class", "precision", "recall", "f1", "support");
            for (c, s) in m.per_class().iter().enumerate() {
                out += &format!("{c:<10} {:>9.4} {:>9.4} {:>9.4} {:>9}\n", s.precision, s.recall, s.f1, s.support);
            }
            out += &format!("{:<10} {p:>9.4} {r:>9.4} {f1:>9.4} {n:>9}\n", "macro avg");
            out += &format!("{:<10} {:>9} {:>9} {:>9.4} {n:>9}\n", "accuracy", "", "", m.accuracy());
            out += "confusion matrix (rows gold, columns predicted)\n";
            out += &format!("{:<10}", "gold\\pred");
            for c in 0..m.classes() {
                out += &format!(" {c:>6}");
            }
            out.push('\n');
            for (g, row) in m.counts.iter().enumerate() {
                out += &format!("{g:<10}");
                for v in row {
                    out += &format!(" {v:>6}");
                }
                out.push('\n');
            }
            out
        }
        Analysis::Regression { task, scatter: s } => {
            let ((plo, phi), (glo, ghi)) = (s.range(true), s.range(false));
            format!(
                "{task}: {} examples, pearson {:.4}\npredictions {plo:.2} to {phi:.2}, gold {glo:.2} to {ghi:.2} \
                 ({})\n",
                s.points.len(),
                s.pearson,
                plot_name(*task)
            )
        }
    }
}

/// The opening of a plot: its size, the font of curves.svg, a white background and the title.
fn svg_open(w: f64, h: f64, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"20\" y=\"26\" font-size=\"14\">{title}</text>\n"
    )
}

/// curves.svg's first colour, which shades the cells and draws the points.
const BLUE: (f64, f64, f64) = (31.0, 119.0, 180.0);

/// `confusion-<task>.svg`: cells shaded by their share of the gold row (white 0 to blue 1), the
/// count written in each.
pub fn confusion_svg(task: Task, m: &Confusion) -> String {
    let (left, top, grid) = (90.0, 80.0, 320.0);
    let k = m.classes().max(1);
    let cell = grid / k as f64;
    let title = format!("{task}: confusion matrix, accuracy {:.4} ({} examples)", m.accuracy(), m.total());
    let mut svg = svg_open(left + grid + 30.0, top + grid + 30.0, &title);
    svg += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">predicted</text>\n", left + grid / 2.0, top - 28.0);
    let (gx, gy) = (left - 50.0, top + grid / 2.0);
    svg += &format!(
        "<text x=\"{gx}\" y=\"{gy}\" text-anchor=\"middle\" transform=\"rotate(-90 {gx} {gy})\">gold</text>\n"
    );
    for c in 0..k {
        let mid = c as f64 * cell + cell / 2.0;
        svg += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{c}</text>\n", left + mid, top - 8.0);
        svg += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{c}</text>\n", left - 8.0, top + mid + 4.0);
    }
    for (g, row) in m.counts.iter().enumerate() {
        let support: usize = row.iter().sum();
        for (p, &v) in row.iter().enumerate() {
            let f = ratio(v, support);
            let shade = |c: f64| (255.0 + (c - 255.0) * f).round();
            let (x, y) = (left + p as f64 * cell, top + g as f64 * cell);
            svg += &format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"rgb({},{},{})\" stroke=\"white\"/>\n",
                shade(BLUE.0),
                shade(BLUE.1),
                shade(BLUE.2)
            );
            let ink = if f > 0.5 { "white" } else { "black" };
            svg += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{ink}\">{v}</text>\n",
                x + cell / 2.0,
                y + cell / 2.0 + 4.0
            );
        }
    }
    svg +=
        &format!("<rect x=\"{left}\" y=\"{top}\" width=\"{grid}\" height=\"{grid}\" fill=\"none\" stroke=\"#888\"/>\n");
    svg + "</svg>\n"
}

/// `<task>-scatter.svg`: prediction (y) against gold (x) with the diagonal y = x, both axes over
/// 0–5 (widened to whole numbers that hold every prediction).
pub fn scatter_svg(task: Task, s: &Scatter) -> String {
    let (left, top, side) = (60.0, 50.0, 380.0);
    let ((plo, phi), (glo, ghi)) = (s.range(true), s.range(false));
    let lo = plo.min(glo).min(0.0).floor();
    let hi = phi.max(ghi).max(5.0).ceil();
    let step = ((hi - lo) / 10.0).ceil().max(1.0);
    let sx = |v: f64| left + (v - lo) / (hi - lo) * side;
    let sy = |v: f64| top + side - (v - lo) / (hi - lo) * side;
    let title = format!("{task}: prediction vs gold, pearson r {:.4} (n = {})", s.pearson, s.points.len());
    let mut svg = svg_open(left + side + 20.0, top + side + 50.0, &title);
    svg +=
        &format!("<rect x=\"{left}\" y=\"{top}\" width=\"{side}\" height=\"{side}\" fill=\"none\" stroke=\"#888\"/>\n");
    let mut t = lo;
    while t <= hi {
        svg += &format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{t}</text>\n", sx(t), top + side + 16.0);
        svg += &format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{t}</text>\n", left - 6.0, sy(t) + 4.0);
        t += step;
    }
    svg +=
        &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">gold</text>\n", left + side / 2.0, top + side + 36.0);
    let (px, py) = (left - 34.0, top + side / 2.0);
    svg += &format!(
        "<text x=\"{px}\" y=\"{py}\" text-anchor=\"middle\" transform=\"rotate(-90 {px} {py})\">prediction</text>\n"
    );
    svg += &format!(
        "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#888\" stroke-width=\"1\"/>\n",
        sx(lo),
        sy(lo),
        sx(hi),
        sy(hi)
    );
    let (r, g, b) = BLUE;
    for &(p, gold) in &s.points {
        svg += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"rgb({r},{g},{b})\" fill-opacity=\"0.35\"/>\n",
            sx(gold),
            sy(p)
        );
    }
    svg + "</svg>\n"
}

/// Writes each task's plot and the report (analysis.txt) into `dir`, each atomically; returns
/// the report's path.
pub fn write(dir: &Path, analyses: &[Analysis]) -> Result<PathBuf> {
    for a in analyses {
        let (name, svg) = a.plot();
        crate::util::write_atomically(&dir.join(name), svg.as_bytes())?;
    }
    let path = dir.join(REPORT);
    crate::util::write_atomically(&path, report(analyses).as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(id: &str, label: Label) -> Example {
        Example { id: id.into(), a: "a".into(), b: None, label: Some(label) }
    }

    /// Gold 0: 3 right, 1 as class 1; gold 1: 1 as 0, 2 right; gold 2: 1 each.
    fn three_classes() -> Confusion {
        Confusion { counts: vec![vec![3, 1, 0], vec![1, 2, 0], vec![1, 1, 1]] }
    }

    #[test]
    fn three_class_precision_recall_f1_by_hand() {
        let m = three_classes();
        let pairs = [(0, 0), (0, 0), (0, 0), (0, 1), (1, 0), (1, 1), (1, 1), (2, 0), (2, 1), (2, 2)];
        assert_eq!(Confusion::from_pairs(3, &pairs), m);
        assert_eq!(m.total(), 10);
        assert_eq!(m.accuracy(), 0.6);
        // Columns sum to 5, 4, 1 predictions; rows to 4, 3, 3 gold.
        let want = [
            ClassStats { precision: 3.0 / 5.0, recall: 3.0 / 4.0, f1: 2.0 / 3.0, support: 4 },
            ClassStats { precision: 2.0 / 4.0, recall: 2.0 / 3.0, f1: 4.0 / 7.0, support: 3 },
            ClassStats { precision: 1.0, recall: 1.0 / 3.0, f1: 0.5, support: 3 },
        ];
        assert_eq!(m.per_class(), want);
        let (p, r, f1) = m.macro_avg();
        assert_eq!(p, (0.6 + 0.5 + 1.0) / 3.0);
        assert_eq!(r, (0.75 + 2.0 / 3.0 + 1.0 / 3.0) / 3.0);
        assert_eq!(f1, (2.0 / 3.0 + 4.0 / 7.0 + 0.5) / 3.0);
    }

    #[test]
    fn a_class_never_predicted_has_precision_zero_not_nan() {
        // Class 1 is never predicted; class 2 neither predicted nor gold.
        let m = Confusion { counts: vec![vec![2, 0, 0], vec![3, 0, 0], vec![0, 0, 0]] };
        let s = m.per_class();
        assert_eq!(s[1], ClassStats { precision: 0.0, recall: 0.0, f1: 0.0, support: 3 });
        assert_eq!(s[2], ClassStats { precision: 0.0, recall: 0.0, f1: 0.0, support: 0 });
        assert_eq!((s[0].precision, s[0].recall, s[0].f1), (0.4, 1.0, 4.0 / 7.0));
        let (p, r, f1) = m.macro_avg();
        assert!(p.is_finite() && r.is_finite() && f1.is_finite());
        assert_eq!(Confusion::from_pairs(2, &[]).accuracy(), 0.0);
    }

    #[test]
    fn binary_labels_and_predictions_are_classes_zero_and_one() {
        let labels = [1.0, 1.0, 0.0, 0.0, 0.0];
        let preds = [true, false, true, false, false];
        let examples: Vec<Example> =
            labels.iter().enumerate().map(|(i, &y)| example(&i.to_string(), Label::Binary(y))).collect();
        let predictions: Vec<(String, Prediction)> =
            preds.iter().enumerate().map(|(i, &b)| (i.to_string(), Prediction::Binary(b))).collect();
        let Some(Analysis::Classes { task, confusion }) = analyse(Task::Quora, &examples, &predictions).unwrap() else {
            panic!("Quora is a classification task");
        };
        assert_eq!(task, Task::Quora);
        assert_eq!(confusion.counts, vec![vec![2, 1], vec![1, 1]]);
        assert_eq!(confusion.accuracy(), 0.6);
        assert_eq!(confusion.per_class()[1], ClassStats { precision: 0.5, recall: 0.5, f1: 0.5, support: 2 });
    }

    #[test]
    fn regression_pairs_their_pearson_and_misfits() {
        let examples: Vec<Example> =
            [1.0, 2.0, 3.0, 4.0].iter().enumerate().map(|(i, &y)| example(&i.to_string(), Label::Score(y))).collect();
        let predictions: Vec<(String, Prediction)> =
            [1.0, 3.0, 2.0, 4.0].iter().enumerate().map(|(i, &p)| (i.to_string(), Prediction::Score(p))).collect();
        let Some(Analysis::Regression { scatter, .. }) = analyse(Task::Sts, &examples, &predictions).unwrap() else {
            panic!("STS is a regression task");
        };
        assert_eq!(scatter.points[1], (3.0, 2.0));
        assert!((scatter.pearson - 0.8).abs() < 1e-12, "{}", scatter.pearson);
        let e = analyse(Task::Sst, &examples, &predictions).unwrap_err().to_string();
        assert!(e.contains("sst example \"0\""), "{e}");
        let unlabelled = vec![Example { label: None, ..examples[0].clone() }];
        assert_eq!(analyse(Task::Sts, &unlabelled, &predictions[..1]).unwrap(), None);
    }

    #[test]
    fn report_and_plots_hold_the_counts() {
        let a = [
            Analysis::Classes { task: Task::Sst, confusion: three_classes() },
            Analysis::Regression { task: Task::Sts, scatter: Scatter::new(vec![(1.0, 1.5), (4.2, 3.0), (-0.5, 0.0)]) },
        ];
        let text = report(&a);
        assert!(text.contains("precision") && text.contains("macro avg") && text.contains("sts: 3 examples"), "{text}");
        assert!(text.contains("0               3      1      0\n"), "{text}");
        let (name, svg) = a[0].plot();
        assert_eq!(name, "confusion-sst.svg");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        // Nine cells, each with its count: 3 of gold 0's 4 (dark, white ink), 1 of gold 2's 3.
        assert_eq!(svg.matches("<rect").count(), 2 + 9);
        assert_eq!(svg.matches("fill=\"white\">").count() + svg.matches("fill=\"black\">").count(), 9);
        assert!(svg.contains("fill=\"white\">3</text>") && svg.contains("fill=\"black\">1</text>"), "{svg}");
        assert!(svg.contains("accuracy 0.6000"));
        let (name, svg) = a[1].plot();
        assert_eq!(name, "sts-scatter.svg");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("(n = 3)") && svg.contains(">-1</text>"), "the axes widen to hold -0.5");
    }
}
