//! `cbr info`: what a model file says about itself, as text or JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cbr::printable;
use cbr_core::format::ModelFormat;
use cbr_core::meta::ClassifierInfo;

#[derive(Args)]
pub struct InfoArgs {
    model: PathBuf,
    /// Print the metadata as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InfoArgs) -> Result<()> {
    let (bytes, file) = cbr::classifier::read_model_file(&a.model)?;
    let info = file.info;
    let operations = match file.format {
        ModelFormat::Onnx => format!("{} graph operations", file.operations),
        ModelFormat::Tflite => format!("{} TFLite operators", file.operations),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let size_mb = bytes.len() as f64 / 1e6;
    let model = printable::path(&a.model);
    println!("model:         {model} ({size_mb:.1} MB, {operations})");
    print_info(&info, &a.model);
    Ok(())
}

/// The metadata of the model at `path`, one aspect per line.
fn print_info(info: &ClassifierInfo, path: &std::path::Path) {
    let p = &info.preprocess;
    // Labels and names come from the file: escaped, so they cannot drive the terminal.
    println!("built by:      cbr {}", printable::printable(&info.cbr_version));
    println!(
        "embedder:      {} ({}-d, output {:?}, sha256 {})",
        printable::printable(&info.embedder.name),
        info.embedder.dim,
        info.embedder.output,
        printable::printable(&info.embedder.sha256)
    );
    println!(
        "preprocessing: {}x{} {:?} {:?}, (pixel - {:?}) / {:?}, resize {:?} ({:?})",
        p.width, p.height, p.layout, p.channel_order, p.mean, p.std, p.resize, p.resample
    );
    if let Some(ix) = &info.index {
        println!(
            "index:         {} rows in {} (approximate search, beside the model)",
            ix.rows,
            cbr::sidecar::index_path(path).display()
        );
    }
    println!(
        "aggregation:   {}{}{}",
        info.aggregation,
        if info.center { ", centred (CL2N)" } else { "" },
        if info.augment { ", mirror-augmented index" } else { "" }
    );
    let prior = info.calibration.as_ref().is_some_and(|c| c.samples == 0);
    match info.temperature {
        Some(t) => println!(
            "scores:        calibrated probabilities (softmax, temperature {t:.4}{})",
            if prior {
                match info.head_options.as_ref().and_then(|o| o.prior.as_ref()) {
                    Some(p) => format!(" from the prior: {}", p.source),
                    None => " from the prior".into(),
                }
            } else {
                ", leave-one-out".into()
            }
        ),
        None => println!("scores:        raw class similarities (cosine)"),
    }
    match (&info.unknown_label, &info.novelty) {
        (Some(u), Some(n)) => {
            println!(
                "unknown entry: {u:?}, last of scores = 1 − sigmoid({:.2} · (s − {:.4})), s = cosine \
                 to the nearest class mean; the best entry is the answer",
                n.scale, n.offset
            );
            match n.known_accepted {
                Some(a) => println!(
                    "               leave-one-out: answers {:.1}% of known photos (target {:.0}%)",
                    100.0 * a,
                    100.0 * n.known_target
                ),
                None => println!("               {}", n.source),
            }
        }
        _ => println!("unknown entry: (none)"),
    }
    if let Some(c) = &info.calibration {
        if let (Some(acc), Some(e0), Some(e1)) = (c.accuracy, c.ece_unfitted, c.ece) {
            println!(
                "leave-one-out: {} images, accuracy {:.1}%, expected calibration error {e1:.3} \
                 (unfitted {e0:.3})",
                c.samples,
                100.0 * acc
            );
        }
    }
    match info.threshold {
        Some(t) => println!(
            "unknown below: {t:.4}{}",
            info.calibration
                .as_ref()
                .and_then(|c| c.target_precision)
                .map(|p| format!(" (chosen for {:.0}% precision)", 100.0 * p))
                .unwrap_or_default()
        ),
        None => println!("unknown below: (no threshold on the top score)"),
    }
    println!(
        "classes:       {} ({} images)",
        info.labels.len(),
        info.images_per_label.iter().sum::<usize>()
    );
    for (label, n) in info.labels.iter().zip(&info.images_per_label) {
        println!("  {}\t{n}", printable::printable(label));
    }
}
