//! `cbr add`, `cbr remove`, `cbr relabel`: open a model, edit it, write it back atomically.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use cbr::edit::{EditReport, EditableModel};

use super::output::{print_skipped, progress_bar};
use super::InputArgs;

#[derive(Args)]
pub struct AddArgs {
    /// A model built by `cbr build` (rewritten in place unless -o is given).
    model: PathBuf,
    /// Images to add: a folder <root>/<label>/<images> or a CSV manifest (path,label); new
    /// labels become new classes.
    input: PathBuf,
    /// Write the result here instead of over the model (missing folders are created).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also index mirror images (must match how the model was built).
    #[arg(long)]
    augment: bool,
    #[command(flatten)]
    input_args: InputArgs,
}

#[derive(Args)]
pub struct RemoveArgs {
    /// A model built by `cbr build` (rewritten in place unless -o is given).
    model: PathBuf,
    /// A class to remove (repeat for several).
    #[arg(long = "label", required = true, value_name = "LABEL")]
    labels: Vec<String>,
    /// Write the result here instead of over the model (missing folders are created).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
pub struct RelabelArgs {
    /// A model built by `cbr build` (rewritten in place unless -o is given).
    model: PathBuf,
    /// The class to rename.
    from: String,
    /// Its new name; an existing class of that name absorbs it.
    to: String,
    /// Write the result here instead of over the model (missing folders are created).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn add(a: AddArgs) -> Result<()> {
    let images = cbr::dataset::from_path(&a.input)?;
    let bar = progress_bar(images.len(), a.input_args.quiet);
    // Under the model's lock from the read to the write: concurrent edits all land.
    let added = cbr::edit::edit_file(&a.model, a.output.as_deref(), |model| {
        let opts = a.input_args.options_with_head(model.options.clone(), a.augment);
        cbr::edit::add(model, &images, &opts, &|done| bar.set_position(done as u64))
    })?;
    bar.finish_and_clear();
    let out = a.output.as_deref().unwrap_or(&a.model);
    print_skipped(&added.skipped, a.input_args.quiet);
    let report = &added.report;
    if !a.input_args.quiet {
        eprintln!(
            "wrote {}: added {} images ({} from the embedding cache); \
             now {} classes, {} index rows",
            out.display(),
            report.added,
            added.cached,
            report.classes,
            report.rows
        );
    }
    Ok(())
}

pub fn remove(a: RemoveArgs) -> Result<()> {
    edit(&a.model, a.output.as_deref(), |m| m.remove_labels(&a.labels))
}

pub fn relabel(a: RelabelArgs) -> Result<()> {
    edit(&a.model, a.output.as_deref(), |m| m.relabel(&a.from, &a.to))
}

/// Opens a model, edits it with `change`, writes it (over the model unless `output`).
fn edit(
    model: &Path,
    output: Option<&Path>,
    change: impl FnOnce(&mut EditableModel) -> Result<EditReport>,
) -> Result<()> {
    let report = cbr::edit::edit_file(model, output, change)?;
    let out = output.unwrap_or(model);
    // A rename removes rows only when it merges classes that share images.
    let removed = match report.removed_rows {
        0 => String::new(),
        n => format!("removed {n} index rows; "),
    };
    eprintln!(
        "wrote {}: {removed}now {} classes, {} index rows",
        out.display(),
        report.classes,
        report.rows
    );
    Ok(())
}
