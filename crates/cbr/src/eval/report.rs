//! Presenting an [`EvalReport`]: plain-text tables and a self-contained HTML
//! page (inline CSS, inline SVG charts, thumbnails as base64 `data:` URIs; no
//! network references).

use std::fmt::Write as _;
use std::path::Path;

use super::{EvalReport, ShotResult, Stat};
use crate::printable::printable;

fn pct(s: &Stat) -> String {
    if !s.mean.is_finite() {
        return "n/a".into();
    }
    match s.ci95 {
        Some(c) => format!("{:5.1} ± {:4.1}", 100.0 * s.mean, 100.0 * c),
        None => format!("{:5.1}", 100.0 * s.mean),
    }
}

fn num(s: &Stat) -> String {
    if !s.mean.is_finite() {
        return "n/a".into();
    }
    match s.ci95 {
        Some(c) => format!("{:.3} ± {:.3}", s.mean, c),
        None => format!("{:.3}", s.mean),
    }
}

fn opt_pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1}", 100.0 * x)).unwrap_or_else(|| "-".into())
}

/// Worst classes by recall (ties: by name).
fn worst_classes(r: &ShotResult, n: usize) -> Vec<&super::ClassMetrics> {
    let Some(d) = &r.detail else { return Vec::new() };
    let mut v: Vec<&super::ClassMetrics> =
        d.per_class.iter().filter(|c| c.recall.is_some()).collect();
    v.sort_by(|a, b| {
        a.recall
            .partial_cmp(&b.recall)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.label.cmp(&b.label))
    });
    v.truncate(n);
    v
}

/// The human-readable report.
pub fn text(r: &EvalReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {} classes, {} images{}; embedder {}{}; {} seed{}",
        printable(&r.dataset),
        r.classes,
        r.images,
        if r.skipped > 0 { format!(" ({} skipped)", r.skipped) } else { String::new() },
        r.embedder,
        if r.augment { ", mirror-augmented index" } else { "" },
        r.seeds,
        if r.seeds == 1 { "" } else { "s" }
    );
    for s in &r.results {
        let _ = writeln!(
            o,
            "\n== {} shot{} per class: {} index images, {} queries per seed ==",
            s.shots,
            if s.shots == 1 { "" } else { "s" },
            s.index_images,
            s.query_images
        );
        let _ = writeln!(o, "{:<22} {:>15} {:>15}", "configuration", "top-1 %", "top-5 %");
        for c in &s.configs {
            let name = format!("{}{}", c.name, if c.default { " (default)" } else { "" });
            let _ = writeln!(o, "{:<22} {:>15} {:>15}", name, pct(&c.top1), pct(&c.top5));
            if let Some(e) = &c.error {
                let _ = writeln!(o, "  ({} failed: {e})", c.name);
            }
        }
        let Some(d) = &s.detail else { continue };
        let _ = writeln!(o, "\ndefault ({}) details, over all seeds:", d.config);
        let _ = writeln!(o, "  worst classes by recall:");
        for c in worst_classes(s, 5) {
            let _ = writeln!(
                o,
                "    {:<32} recall {:>5}%  precision {:>5}%  ({} queries)",
                printable(&c.label),
                opt_pct(c.recall),
                opt_pct(c.precision),
                c.support
            );
        }
        if !d.confused_pairs.is_empty() {
            let _ = writeln!(o, "  most confused (true -> predicted):");
            for p in d.confused_pairs.iter().take(5) {
                let _ = writeln!(
                    o,
                    "    {} -> {}: {} ({:.1}% of {})",
                    printable(&p.truth),
                    printable(&p.predicted),
                    p.count,
                    100.0 * p.rate,
                    printable(&p.truth)
                );
            }
        }
        let c = &d.calibration;
        let _ = writeln!(
            o,
            "  calibration (ECE of the top score on held-out queries): unfitted τ=1 {} -> fitted τ {}  (τ = {})",
            num(&c.ece_unfitted),
            num(&c.ece_fitted),
            num(&c.temperature)
        );
        match &d.open_set {
            Some(os) => {
                let _ = writeln!(
                    o,
                    "  open set ({} known classes, {} held out as unknown):",
                    os.known_classes, os.unknown_classes
                );
                let _ = writeln!(o, "    AUROC known vs unknown (known score) {}", num(&os.auroc));
                let _ = writeln!(o, "    with the model's own unknown answer:");
                let _ = writeln!(
                    o,
                    "      accuracy of accepted known queries {} %",
                    pct(&os.known_accuracy_accepted)
                );
                let _ = writeln!(
                    o,
                    "      known queries accepted             {} %",
                    pct(&os.known_accepted)
                );
                let _ = writeln!(
                    o,
                    "      unknown queries rejected           {} %",
                    pct(&os.unknown_rejected)
                );
            }
            None => {
                let _ = writeln!(o, "  open set: not measured (needs 3 or more classes)");
            }
        }
        if let Some(f) = &s.far_unknown {
            let _ = writeln!(o, "  images of no known class ({} images, --unknown):", f.images);
            for (what, v) in far_unknown_rows(f) {
                let _ = writeln!(o, "    {what:<46} {v}");
            }
        }
    }
    o
}

/// The rows of the `--unknown` table: what, value (as text).
fn far_unknown_rows(f: &super::FarUnknownResult) -> Vec<(&'static str, String)> {
    vec![
        ("AUROC known vs unknown (known score)", num(&f.auroc)),
        ("unknown answered at 95% known answered %", pct(&f.fpr_at_95_tpr)),
        ("with the model's own unknown answer:", String::new()),
        ("  known photos answered %", pct(&f.known_accepted)),
        ("  known photos answered right %", pct(&f.known_right_and_accepted)),
        ("  unknown images answered \"unknown\" %", pct(&f.unknown_rejected)),
        ("top-1 of known photos, never unknown %", pct(&f.top1_no_threshold)),
    ]
}

// ---------------------------------------------------------------- HTML

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        o.push(A[(n >> 18) as usize & 63] as char);
        o.push(A[(n >> 12) as usize & 63] as char);
        o.push(if c.len() > 1 { A[(n >> 6) as usize & 63] as char } else { '=' });
        o.push(if c.len() > 2 { A[n as usize & 63] as char } else { '=' });
    }
    o
}

/// `s` escaped for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A JPEG thumbnail (longest side `size`) as a data: URI; none if unreadable.
pub fn thumbnail_uri(path: &Path, size: u32) -> Option<String> {
    let img = crate::decode::load_rgb(path, &crate::decode::DecodeLimits::default()).ok()?;
    let (w, h) = (img.width().max(1), img.height().max(1));
    let scale = size as f64 / w.max(h) as f64;
    let (tw, th) =
        (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
    let small = image::imageops::thumbnail(&img, tw, th);
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 80).encode_image(&small).ok()?;
    Some(format!("data:image/jpeg;base64,{}", base64(&buf)))
}

/// Classes shown in the heatmap: all, or the `max` most confused (most
/// off-diagonal mass as truth or prediction), in class order.
pub fn heatmap_classes(m: &[Vec<u64>], max: usize) -> Vec<usize> {
    let n = m.len();
    if n <= max {
        return (0..n).collect();
    }
    let mut mass: Vec<(u64, usize)> = (0..n)
        .map(|c| ((0..n).filter(|&j| j != c).map(|j| m[c][j] + m[j][c]).sum::<u64>(), c))
        .collect();
    mass.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut keep: Vec<usize> = mass[..max].iter().map(|x| x.1).collect();
    keep.sort();
    keep
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// The confusion matrix as an SVG heatmap; cells coloured by the share of
/// the true class's queries.
fn heatmap_svg(labels: &[String], m: &[Vec<u64>], classes: &[usize]) -> String {
    let n = classes.len();
    let cell = (640.0 / n as f64).clamp(8.0, 40.0);
    let margin = 170.0;
    let size = margin + cell * n as f64 + 10.0;
    // Extra width on the right for the last rotated column labels.
    let mut o = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{size:.0}" font-size="{:.0}" font-family="sans-serif">"#,
        size + 100.0,
        (cell * 0.7).clamp(7.0, 12.0)
    );
    for (i, &c) in classes.iter().enumerate() {
        let y = margin + cell * (i as f64 + 0.7);
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{y:.1}" text-anchor="end">{}</text>"#,
            margin - 4.0,
            esc(&short(&labels[c], 24))
        );
        let x = margin + cell * (i as f64 + 0.7);
        let _ = write!(
            o,
            r#"<text transform="translate({x:.1},{:.1}) rotate(-60)">{}</text>"#,
            margin - 4.0,
            esc(&short(&labels[c], 24))
        );
    }
    for (i, &t) in classes.iter().enumerate() {
        let total: u64 = m[t].iter().sum::<u64>().max(1);
        for (j, &p) in classes.iter().enumerate() {
            let v = m[t][p] as f64 / total as f64;
            // White to dark blue, on a square-root scale so small confusions show.
            let s = v.sqrt();
            let (r, g, b) = (
                (255.0 * (1.0 - 0.9 * s)) as u8,
                (255.0 * (1.0 - 0.7 * s)) as u8,
                (255.0 * (1.0 - 0.25 * s)) as u8,
            );
            let _ = write!(
                o,
                r##"<rect x="{:.1}" y="{:.1}" width="{cell:.1}" height="{cell:.1}" fill="rgb({r},{g},{b})" stroke="#eee" stroke-width="0.5"><title>{} → {}: {} ({:.1}%)</title></rect>"##,
                margin + cell * j as f64,
                margin + cell * i as f64,
                esc(&labels[t]),
                esc(&labels[p]),
                m[t][p],
                100.0 * v
            );
        }
    }
    let _ = write!(o, r#"<text x="4" y="14">rows: true class; columns: predicted</text></svg>"#);
    o
}

/// Reliability diagram: accuracy per confidence bin against the diagonal.
fn reliability_svg(bins: &[super::ReliabilityBin]) -> String {
    let (w, h, l, b) = (360.0, 300.0, 44.0, 40.0);
    let pw = w - l - 10.0;
    let ph = h - b - 10.0;
    let mut o = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-size="10" font-family="sans-serif">"#
    );
    let _ = write!(
        o,
        r##"<rect x="{l}" y="10" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>"##
    );
    let _ = write!(
        o,
        r##"<line x1="{l}" y1="{}" x2="{}" y2="10" stroke="#999" stroke-dasharray="4 3"/>"##,
        10.0 + ph,
        l + pw
    );
    let total: u64 = bins.iter().map(|x| x.count).sum::<u64>().max(1);
    for bin in bins {
        let x = l + pw * bin.lo;
        let bw = pw * (bin.hi - bin.lo);
        if let Some(a) = bin.accuracy {
            let _ = write!(
                o,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4a78c2" opacity="0.85"><title>confidence {:.2}-{:.2}: accuracy {:.1}%, mean confidence {:.1}%, {} queries</title></rect>"##,
                x + 1.0,
                10.0 + ph * (1.0 - a),
                bw - 2.0,
                ph * a,
                bin.lo,
                bin.hi,
                100.0 * a,
                100.0 * bin.confidence.unwrap_or(0.0),
                bin.count
            );
        }
        // Share of queries in the bin, as a grey strip along the bottom.
        let share = bin.count as f64 / total as f64;
        let _ = write!(
            o,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#d08a2e"/>"##,
            x + 1.0,
            10.0 + ph - 30.0 * share,
            bw - 2.0,
            30.0 * share
        );
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="8">{}</text>"#,
            x + bw / 2.0,
            h - b + 12.0,
            bin.count
        );
    }
    for t in 0..=5 {
        let v = t as f64 / 5.0;
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.1}</text>"#,
            l - 3.0,
            10.0 + ph * (1.0 - v) + 3.0
        );
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{v:.1}</text>"#,
            l + pw * v,
            h - b + 24.0
        );
    }
    let _ = write!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">confidence (top score); counts per bin</text>"#,
        l + pw / 2.0,
        h - 4.0
    );
    let _ = write!(
        o,
        r#"<text transform="translate(10,{:.1}) rotate(-90)" text-anchor="middle">accuracy</text></svg>"#,
        10.0 + ph / 2.0
    );
    o
}

/// The reports' shared style sheet (`cbr eval`, `cbr check`).
pub const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f0f0f0}td.l,th.l{text-align:left}tr.def{font-weight:bold}\
.pair{border:1px solid #ddd;padding:6px;margin:6px 0}.pair img{margin:2px;vertical-align:middle;border:1px solid #ccc}\
.arrow{font-size:1.5em;margin:0 8px}h2{border-bottom:1px solid #ccc}.note{color:#666;font-size:.9em}";

/// The self-contained HTML report.
pub fn html(r: &EvalReport) -> String {
    let mut o = String::new();
    let _ = write!(o, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>cbr eval: {}</title><style>{CSS}</style></head><body>", esc(&r.dataset));
    let _ = write!(
        o,
        "<h1>cbr eval</h1><p>{}: {} classes, {} images{}; embedder {}{}; {} seeds; embedding {:.1} s, evaluation {:.1} s.</p>",
        esc(&r.dataset),
        r.classes,
        r.images,
        if r.skipped > 0 { format!(" ({} skipped)", r.skipped) } else { String::new() },
        esc(&r.embedder),
        if r.augment { ", mirror-augmented index" } else { "" },
        r.seeds,
        r.embed_seconds,
        r.eval_seconds
    );
    for s in &r.results {
        let _ = write!(o, "<h2>{} shot{} per class</h2><p class=\"note\">{} index images and {} queries per seed; mean ± 95% interval over seeds.</p>", s.shots, if s.shots == 1 { "" } else { "s" }, s.index_images, s.query_images);
        o.push_str("<table><tr><th class=\"l\">configuration</th><th>centred</th><th>calibrated</th><th>top-1 %</th><th>top-5 %</th></tr>");
        for c in &s.configs {
            let _ = write!(
                o,
                "<tr{}><td class=\"l\">{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if c.default { " class=\"def\"" } else { "" },
                esc(&c.name),
                if c.default { " (default)" } else { "" },
                if c.center { "yes" } else { "no" },
                if c.calibrate { "yes" } else { "no" },
                pct(&c.top1),
                pct(&c.top5)
            );
        }
        o.push_str("</table>");
        let Some(d) = &s.detail else { continue };
        let _ = write!(o, "<h3>Default configuration ({})</h3>", esc(&d.config));
        // Confusion matrix.
        let classes = heatmap_classes(&d.confusion, 40);
        let _ = write!(
            o,
            "<h4>Confusion matrix</h4><p class=\"note\">Summed over seeds; colour: share of the true class's queries{}.</p>{}",
            if classes.len() < d.labels.len() { format!("; the {} most-confused of {} classes", classes.len(), d.labels.len()) } else { String::new() },
            heatmap_svg(&d.labels, &d.confusion, &classes)
        );
        // Calibration.
        let c = &d.calibration;
        let _ = write!(
            o,
            "<h4>Calibration</h4><p>Expected calibration error of the top score on held-out queries: unfitted (softmax τ = 1) {} → fitted (τ = {}) {}.</p><p class=\"note\">Reliability diagram of the {} scores, all seeds: bars are accuracy per confidence bin, the dashed line perfect calibration, the orange strip and numbers the queries per bin.</p>{}",
            num(&c.ece_unfitted),
            num(&c.temperature),
            num(&c.ece_fitted),
            esc(&c.reliability_of),
            reliability_svg(&c.reliability)
        );
        // Open set.
        if let Some(os) = &d.open_set {
            let _ = write!(
                o,
                "<h4>Open set</h4><p class=\"note\">{} classes held out entirely as unknown, {} known.</p><table>\
                 <tr><td class=\"l\">AUROC, known vs unknown queries (known score)</td><td>{}</td></tr>\
                 <tr><td class=\"l\">model threshold on the top score</td><td>{}</td></tr>\
                 <tr><td class=\"l\">accuracy of accepted known queries %</td><td>{}</td></tr>\
                 <tr><td class=\"l\">known queries accepted %</td><td>{}</td></tr>\
                 <tr><td class=\"l\">unknown queries rejected %</td><td>{}</td></tr></table>",
                os.unknown_classes,
                os.known_classes,
                num(&os.auroc),
                num(&os.threshold),
                pct(&os.known_accuracy_accepted),
                pct(&os.known_accepted),
                pct(&os.unknown_rejected)
            );
        }
        if let Some(f) = &s.far_unknown {
            let _ = write!(
                o,
                "<h4>Images of no known class</h4><p class=\"note\">{} images given with --unknown, \
                 scored against the known photos; the known score is 1 − the model's unknown entry.</p><table>",
                f.images
            );
            for (what, v) in far_unknown_rows(f) {
                let _ =
                    write!(o, "<tr><td class=\"l\">{}</td><td>{}</td></tr>", esc(what), esc(&v));
            }
            o.push_str("</table>");
        }
        // Worst classes.
        o.push_str("<h4>Worst classes by recall</h4><table><tr><th class=\"l\">class</th><th>recall %</th><th>precision %</th><th>queries</th></tr>");
        for c in worst_classes(s, 10) {
            let _ = write!(
                o,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.label),
                opt_pct(c.recall),
                opt_pct(c.precision),
                c.support
            );
        }
        o.push_str("</table>");
        // Confused pairs with thumbnails.
        if !d.confused_pairs.is_empty() {
            o.push_str("<h4>Most confused pairs</h4><p class=\"note\">Left: queries of the true class predicted as the other; right: images of the predicted class.</p>");
            for p in d.confused_pairs.iter().take(8) {
                let _ = write!(
                    o,
                    "<div class=\"pair\"><b>{}</b> → <b>{}</b>: {} queries ({:.1}%)<br>",
                    esc(&p.truth),
                    esc(&p.predicted),
                    p.count,
                    100.0 * p.rate
                );
                for e in p.examples.iter().take(3) {
                    if let Some(uri) = thumbnail_uri(Path::new(e), 96) {
                        let _ = write!(
                            o,
                            "<img src=\"{uri}\" alt=\"{}\" title=\"{}\">",
                            esc(&p.truth),
                            esc(e)
                        );
                    }
                }
                o.push_str("<span class=\"arrow\">→</span>");
                for e in p.predicted_examples.iter().take(2) {
                    if let Some(uri) = thumbnail_uri(Path::new(e), 96) {
                        let _ = write!(
                            o,
                            "<img src=\"{uri}\" alt=\"{}\" title=\"{}\">",
                            esc(&p.predicted),
                            esc(e)
                        );
                    }
                }
                o.push_str("</div>");
            }
        }
    }
    o.push_str("</body></html>\n");
    o
}
