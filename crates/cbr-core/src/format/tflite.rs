//! TFLite classifier files: reading their outline (the `cbr` metadata entry,
//! inputs, outputs, tensor names) from the flatbuffer.

use anyhow::Result;

use crate::error::Error;
use crate::meta::{GraphSignature, TensorDecl};

/// The cbr metadata JSON, the main subgraph's signature and its operator count.
pub(super) fn outline(bytes: &[u8]) -> Result<(String, GraphSignature, usize)> {
    let json =
        crate::tflite::read_info_json(bytes).map_err(|e| Error::bad_input(format!("{e:#}")))?;
    let model = crate::tflite::root(bytes).map_err(|e| Error::bad_input(format!("{e:#}")))?;
    let sub = model
        .subgraphs()
        .and_then(|s| s.iter().next())
        .ok_or_else(|| Error::bad_input("the TFLite model has no subgraph"))?;
    let tensors = sub.tensors().map(|t| t.iter().collect::<Vec<_>>()).unwrap_or_default();
    let decl = |i: i32| -> Result<TensorDecl> {
        let t = tensors.get(i as usize).ok_or_else(|| {
            Error::bad_input(format!("the TFLite model names tensor {i}, which it lacks"))
        })?;
        Ok(TensorDecl {
            name: t.name().unwrap_or_default().to_string(),
            shape: t
                .shape()
                .map(|s| s.iter().map(|d| Some(d as i64)).collect())
                .unwrap_or_default(),
        })
    };
    let inputs =
        sub.inputs().map(|v| v.iter().map(decl).collect()).transpose()?.unwrap_or_default();
    let outputs =
        sub.outputs().map(|v| v.iter().map(decl).collect()).transpose()?.unwrap_or_default();
    let names = tensors.iter().filter_map(|t| t.name().map(str::to_string)).collect();
    let operations = sub.operators().map(|o| o.len()).unwrap_or(0);
    Ok((json, GraphSignature { inputs, outputs, tensors: names }, operations))
}
