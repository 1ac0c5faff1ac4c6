//! Presenting a [`CheckReport`]: short text (what to look at first), the JSON document
//! (`cbr-check/1`) and a self-contained HTML page with thumbnails (inline CSS, images as
//! base64 `data:` URIs, no network references), in the style of `cbr eval`'s report.

use std::fmt::Write as _;
use std::path::Path;

use super::{CheckReport, Duplicate};
use crate::eval::report::{esc, thumbnail_uri, CSS};
use crate::printable::printable;

/// The JSON document (pretty-printed).
pub fn json(r: &CheckReport) -> String {
    serde_json::to_string_pretty(r).expect("a check report serialises")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One section of the text report: its title, then at most `limit` of `lines`, then how many
/// more there are. Nothing when there are no lines.
fn section(o: &mut String, title: &str, lines: Vec<String>, limit: usize) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n{title}");
    for line in lines.iter().take(limit) {
        let _ = writeln!(o, "  {line}");
    }
    if lines.len() > limit {
        let _ = writeln!(
            o,
            "  ... and {} more (--json or --report lists them all)",
            lines.len() - limit
        );
    }
}

/// What to fix first, in order, as (count, what) lines; the sections below follow this order.
fn priorities(r: &CheckReport) -> Vec<(usize, String)> {
    let conflicts = r.duplicates.iter().filter(|d| d.across_classes).count();
    let within = r.duplicates.len() - conflicts;
    let needs = r.classes_health.iter().filter(|c| c.needs_more).count();
    vec![
        (conflicts, "label conflicts: the same or nearly the same image in two classes".into()),
        (r.mislabelled.len(), "likely mislabelled images: another class claims them".to_string()),
        (within, "duplicates within a class (they count twice)".into()),
        (r.outliers.len(), "outliers: far from the rest of their class".into()),
        (needs, "classes that need more images".into()),
    ]
}

fn dup_line(d: &Duplicate) -> String {
    let kind = if d.exact { "same file" } else { "cosine" };
    let how = if d.exact { kind.to_string() } else { format!("{kind} {:.3}", d.cosine) };
    if d.across_classes {
        format!(
            "{} [{}]  ~  {} [{}]  ({how})",
            printable(&d.a),
            printable(&d.label_a),
            printable(&d.b),
            printable(&d.label_b)
        )
    } else {
        format!("{}  ~  {} [{}]  ({how})", printable(&d.a), printable(&d.b), printable(&d.label_a))
    }
}

/// The human-readable report: a summary, what to look at first, then up to `limit` lines per
/// kind of problem.
pub fn text(r: &CheckReport, limit: usize) -> String {
    let mut o = String::new();
    let t = &r.thresholds;
    let _ = writeln!(
        o,
        "cbr check {}: {} classes, {}{}; embedder {}",
        printable(&r.dataset),
        r.classes,
        plural(r.images, "image", "images"),
        if r.skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} unreadable, skipped)", r.skipped.len())
        },
        printable(&r.embedder)
    );
    match &r.leave_one_out {
        Some(l) => {
            let _ = writeln!(
                o,
                "leave-one-out accuracy {:.1}% ({} images, each scored by the model built from \
                 the others)",
                100.0 * l.accuracy,
                l.images
            );
        }
        None => {
            let _ = writeln!(
                o,
                "no leave-one-out: no class has two images (mislabels, outliers and \
                 confusions need at least two per class)"
            );
        }
    }
    let todo: Vec<(usize, String)> = priorities(r).into_iter().filter(|(n, _)| *n > 0).collect();
    if todo.is_empty() {
        let _ = writeln!(o, "\nno problems found");
    } else {
        let _ = writeln!(o, "\nlook at first:");
        for (k, (n, what)) in todo.iter().enumerate() {
            let _ = writeln!(o, "  {}. {what}: {n}", k + 1);
        }
    }

    let (conflicts, within): (Vec<&Duplicate>, Vec<&Duplicate>) =
        r.duplicates.iter().partition(|d| d.across_classes);
    section(
        &mut o,
        &format!(
            "label conflicts (cosine >= {} in different classes; keep one label):",
            t.duplicate_cosine
        ),
        conflicts.iter().map(|d| dup_line(d)).collect(),
        limit,
    );
    section(
        &mut o,
        &format!(
            "likely mislabelled (leave-one-out: another class is best and the label gets \
             <= {} x chance):",
            t.mislabel_fraction
        ),
        r.mislabelled
            .iter()
            .map(|m| {
                format!(
                    "{}: labelled {}, looks like {} (p {:.2}; label p {:.4})",
                    printable(&m.path),
                    printable(&m.label),
                    printable(&m.suggested),
                    m.p_suggested,
                    m.p_label
                )
            })
            .collect(),
        limit,
    );
    section(
        &mut o,
        &format!(
            "duplicates within a class (same file, or cosine >= {}; exact copies were skipped):",
            t.duplicate_cosine
        ),
        within.iter().map(|d| dup_line(d)).collect(),
        limit,
    );
    section(
        &mut o,
        &format!(
            "outliers (cosine to their class mean at least {} robust deviations below the \
             class's median; wrong content, or a part of the class with too few examples):",
            t.outlier_z
        ),
        r.outliers
            .iter()
            .map(|x| {
                format!(
                    "{} [{}]: {:.3} to its class (median {:.3}, z {:.1}; nearest in class {:.3})",
                    printable(&x.path),
                    printable(&x.label),
                    x.class_similarity,
                    x.class_median,
                    x.z,
                    x.nearest_in_class
                )
            })
            .collect(),
        limit,
    );
    section(
        &mut o,
        "classes that need more images:",
        r.classes_health
            .iter()
            .filter(|c| c.needs_more)
            .map(|c| format!("{}: {}", printable(&c.label), c.reasons.join("; ")))
            .collect(),
        limit,
    );
    if !r.confusable_pairs.is_empty() {
        let _ = writeln!(
            o,
            "\nmost confusable classes (mean leave-one-out probability exchanged; images \
             predicted as the other):"
        );
        for p in r.confusable_pairs.iter().take(limit.min(5)) {
            let _ = writeln!(
                o,
                "  {} <-> {}: {:.3} ({} of {} look like {}, {} the other way)",
                printable(&p.a),
                printable(&p.b),
                p.confusion,
                p.a_as_b,
                printable(&p.a),
                printable(&p.b),
                p.b_as_a
            );
        }
    }
    section(
        &mut o,
        "unreadable images (skipped, as cbr build skips them):",
        r.skipped
            .iter()
            .map(|s| format!("{}: {}", printable(&s.path), printable(&s.reason)))
            .collect(),
        limit,
    );
    let _ = writeln!(o, "\nembedding {:.1} s, check {:.1} s", r.embed_seconds, r.check_seconds);
    o
}

/// At most this many images of each kind get thumbnails in the HTML report (each is decoded
/// and re-encoded, and the page holds them all).
const HTML_ITEMS: usize = 100;
/// Thumbnails' longest side, pixels.
const THUMB: u32 = 96;

fn thumb(o: &mut String, path: &str, caption: &str) {
    let uri = thumbnail_uri(Path::new(path), THUMB);
    let _ = write!(o, "<figure>");
    match uri {
        Some(u) => {
            let _ = write!(o, "<img src=\"{u}\" alt=\"{}\" title=\"{}\">", esc(caption), esc(path));
        }
        None => {
            let _ = write!(o, "<div class=\"missing\" title=\"{}\">unreadable</div>", esc(path));
        }
    }
    let _ = write!(o, "<figcaption>{}</figcaption></figure>", esc(caption));
}

fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

const EXTRA_CSS: &str = "figure{display:inline-block;margin:4px;text-align:center;\
vertical-align:top;max-width:140px;font-size:.8em;word-break:break-all}\
figure img{border:1px solid #ccc}.missing{width:96px;height:64px;background:#eee;color:#999}\
.item{border:1px solid #ddd;padding:6px;margin:6px 0}ol li{margin:2px 0}";

/// The self-contained HTML report.
pub fn html(r: &CheckReport) -> String {
    let mut o = String::new();
    let t = &r.thresholds;
    let _ = write!(
        o,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>cbr check: {}</title>\
         <style>{CSS}{EXTRA_CSS}</style></head><body><h1>cbr check</h1>",
        esc(&r.dataset)
    );
    let _ = write!(
        o,
        "<p>{}: {} classes, {} images{}; embedder {}; embedding {:.1} s, check {:.1} s.</p>",
        esc(&r.dataset),
        r.classes,
        r.images,
        if r.skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} unreadable, skipped)", r.skipped.len())
        },
        esc(&r.embedder),
        r.embed_seconds,
        r.check_seconds
    );
    if let Some(l) = &r.leave_one_out {
        let _ = write!(
            o,
            "<p>Leave-one-out accuracy {:.1}% over {} images (each scored by the model built \
             from the others; temperature {:.4}).</p>",
            100.0 * l.accuracy,
            l.images,
            l.temperature
        );
    }
    o.push_str("<h2>Look at first</h2><ol>");
    for (n, what) in priorities(r) {
        let _ = write!(o, "<li>{}: {n}</li>", esc(&what));
    }
    o.push_str("</ol>");

    let conflicts: Vec<&Duplicate> = r.duplicates.iter().filter(|d| d.across_classes).collect();
    let within: Vec<&Duplicate> = r.duplicates.iter().filter(|d| !d.across_classes).collect();
    let shown = |n: usize| {
        if n > HTML_ITEMS {
            format!(" The first {HTML_ITEMS} of {n} are shown; `cbr check --json` lists all.")
        } else {
            String::new()
        }
    };
    let dup_section = |o: &mut String, title: &str, note: &str, list: &[&Duplicate]| {
        if list.is_empty() {
            return;
        }
        let _ = write!(
            o,
            "<h2>{}</h2><p class=\"note\">{}{}</p>",
            esc(title),
            esc(note),
            shown(list.len())
        );
        for d in list.iter().take(HTML_ITEMS) {
            o.push_str("<div class=\"item\">");
            thumb(o, &d.a, &format!("{} · {}", d.label_a, file_name(&d.a)));
            thumb(o, &d.b, &format!("{} · {}", d.label_b, file_name(&d.b)));
            let _ = write!(
                o,
                "<span class=\"note\">{}</span></div>",
                if d.exact { "same file".to_string() } else { format!("cosine {:.3}", d.cosine) }
            );
        }
    };
    dup_section(
        &mut o,
        "Label conflicts",
        &format!(
            "The same image (or a cosine of at least {}) in two classes: keep one label.",
            t.duplicate_cosine
        ),
        &conflicts,
    );
    if !r.mislabelled.is_empty() {
        let _ = write!(
            o,
            "<h2>Likely mislabelled</h2><p class=\"note\">Leave-one-out puts another class first \
             and gives the label at most {} × chance (1/{}).{}</p><table><tr><th class=\"l\">image</th>\
             <th class=\"l\">labelled</th><th class=\"l\">looks like</th><th>p</th>\
             <th>label p</th></tr>",
            t.mislabel_fraction,
            r.classes,
            shown(r.mislabelled.len())
        );
        for m in r.mislabelled.iter().take(HTML_ITEMS) {
            o.push_str("<tr><td class=\"l\">");
            thumb(&mut o, &m.path, file_name(&m.path));
            let _ = write!(
                o,
                "</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{:.2}</td><td>{:.4}</td></tr>",
                esc(&m.label),
                esc(&m.suggested),
                m.p_suggested,
                m.p_label
            );
        }
        o.push_str("</table>");
    }
    dup_section(
        &mut o,
        "Duplicates within a class",
        &format!(
            "The same file (skipped when building) or a cosine of at least {}: they count twice.",
            t.duplicate_cosine
        ),
        &within,
    );
    if !r.outliers.is_empty() {
        let _ = write!(
            o,
            "<h2>Outliers</h2><p class=\"note\">Cosine to the mean of the rest of their class at \
             least {} robust deviations below the class's median.{}</p>",
            t.outlier_z,
            shown(r.outliers.len())
        );
        for x in r.outliers.iter().take(HTML_ITEMS) {
            thumb(&mut o, &x.path, &format!("{} · {} · z {:.1}", x.label, file_name(&x.path), x.z));
        }
    }
    o.push_str(
        "<h2>Classes</h2><table><tr><th class=\"l\">class</th><th>images</th>\
         <th>leave-one-out accuracy %</th><th class=\"l\">needs more images because</th></tr>",
    );
    for c in &r.classes_health {
        let _ = write!(
            o,
            "<tr{}><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            if c.needs_more { " class=\"def\"" } else { "" },
            esc(&c.label),
            c.images,
            c.loo_accuracy.map_or("-".into(), |a| format!("{:.1}", 100.0 * a)),
            esc(&c.reasons.join("; "))
        );
    }
    o.push_str("</table>");
    if !r.confusable_pairs.is_empty() {
        o.push_str(
            "<h2>Most confusable classes</h2><p class=\"note\">Mean leave-one-out probability \
             one class's images give the other; images whose best class is the other.</p><table>\
             <tr><th class=\"l\">class a</th><th class=\"l\">class b</th><th>confusion</th>\
             <th>a as b</th><th>b as a</th></tr>",
        );
        for p in &r.confusable_pairs {
            let _ = write!(
                o,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.a),
                esc(&p.b),
                p.confusion,
                p.a_as_b,
                p.b_as_a
            );
        }
        o.push_str("</table>");
    }
    if !r.skipped.is_empty() {
        o.push_str("<h2>Unreadable images</h2><table>");
        for s in &r.skipped {
            let _ = write!(
                o,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                esc(&s.path),
                esc(&s.reason)
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</body></html>\n");
    o
}
