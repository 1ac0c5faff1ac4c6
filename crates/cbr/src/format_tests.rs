//! The one reader refuses tampered metadata with a clear error, never a
//! panic: each field of a real classifier file (written by the real writer on
//! a tiny ONNX embedder, so no runtime or download is needed) is set to
//! hostile values, by hand for the cases issue 12 found and then at random
//! (seeded) over every field of the JSON.

use serde_json::{json, Value};

use crate::error::{kind_of, ErrorKind};
use crate::testing;
use cbr_core::format::*;
use cbr_core::head::{HeadOptions, RetrievalHead};
use cbr_core::meta::{EmbedderInfo, METADATA_KEY};
use cbr_core::onnx;
use cbr_core::preprocess::{Layout, Preprocess};
use cbr_core::rng::SplitMix64;

const DIM: usize = 8;

/// A real classifier file: 3 classes of 4 images on the tiny embedder.
fn classifier(opts: &HeadOptions) -> Vec<u8> {
    let labels: Vec<String> = (0..12).map(|i| format!("class{}", i / 4)).collect();
    let embeddings = SplitMix64::new(11).uniform_vec(12 * DIM, 0.0, 4.0);
    let head = RetrievalHead::new(&embeddings, DIM, &labels, opts).unwrap();
    let info = EmbedderInfo {
        name: "tiny".into(),
        sha256: "0".repeat(64),
        input: "input".into(),
        output: "features".into(),
        dim: DIM,
    };
    let preprocess = Preprocess::raw(2, 2, Layout::Nchw);
    write_classifier(
        EmbedderGraph::Onnx(&testing::tiny_onnx_embedder(DIM, 17, 7)),
        &info,
        &preprocess,
        head.clone(),
        &WriteOptions::default(),
    )
    .unwrap()
}

fn metadata_json(bytes: &[u8]) -> Value {
    let model = onnx::decode(bytes).unwrap();
    serde_json::from_str(onnx::metadata(&model, METADATA_KEY).unwrap()).unwrap()
}

fn with_metadata(bytes: &[u8], json: &Value) -> Vec<u8> {
    let mut model = onnx::decode(bytes).unwrap();
    onnx::set_metadata(&mut model, METADATA_KEY, &json.to_string());
    onnx::encode(&model)
}

/// Sets the value at a JSON pointer (`/preprocess/width`).
fn set(json: &mut Value, pointer: &str, value: Value) {
    *json.pointer_mut(pointer).unwrap_or_else(|| panic!("no field {pointer}")) = value;
}

/// Every path to a leaf (and to each array and object) of `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                pointers(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate().take(4) {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    if !at.is_empty() {
        out.push(at);
    }
}

/// What every opener says about `bytes`: the error, if any. Opening must not
/// panic; the reader's errors are bad input and mention the metadata.
fn open_all(bytes: &[u8]) -> Option<String> {
    let read_err = read(bytes).err();
    // The classifier and the editor read through `read` first: a refused file
    // never reaches a runtime (so no ONNX Runtime is needed here).
    if let Some(e) = &read_err {
        assert_eq!(kind_of(e), ErrorKind::BadInput, "{e:#}");
        let c = crate::classifier::Classifier::from_bytes(bytes).err().expect("classifier refuses");
        assert_eq!(format!("{c:#}"), format!("{e:#}"));
        assert!(crate::edit::EditableModel::from_bytes(bytes).is_err());
    }
    read_err.map(|e| format!("{e:#}"))
}

#[test]
fn a_written_classifier_reads_back() {
    let bytes = classifier(&HeadOptions::default());
    let file = read(&bytes).unwrap();
    assert_eq!(file.format, ModelFormat::Onnx);
    assert_eq!(file.info.labels, ["class0", "class1", "class2"]);
    assert_eq!(file.fixed_batch(), None);
    assert!(file.operations > 2);
}

#[test]
fn the_tampering_issue_12_found_is_refused_by_field() {
    let bytes = classifier(&HeadOptions::default());
    let good = metadata_json(&bytes);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/preprocess/width", json!(0), "preprocess.width is 0"),
        ("/preprocess/width", json!(100000), "preprocess.width is 100000"),
        ("/preprocess/height", json!(100000), "preprocess.height"),
        ("/preprocess/width", json!(3), "preprocess.width is 3 but the model's input"),
        ("/preprocess/std/1", json!(0.0), "preprocess.std[1] is 0"),
        ("/preprocess/mean/0", json!(1e39), "preprocess.mean[0] is inf"),
        ("/labels", json!(["class0", "class1"]), "images_per_label has 3 entries for 2 labels"),
        ("/labels/2", json!("class0"), "labels[2] repeats the label \"class0\""),
        ("/labels/1", json!(""), "labels[1] is empty"),
        ("/embedder/input", json!("image"), "embedder.input is \"image\", which is not an input"),
        ("/embedder/output", json!("nope"), "embedder.output is \"nope\""),
        ("/embedder/dim", json!(0), "embedder.dim is 0"),
        ("/temperature", json!(0.0), "temperature is 0"),
        ("/temperature", json!(-1.0), "temperature is -1"),
        ("/threshold", json!(1e39), "threshold is inf"),
        ("/images_per_label/0", json!(0), "images_per_label[0] is 0"),
        ("/head_options/power", json!(0.0), "head_options.power is 0"),
        ("/head_options/target_precision", json!(2.0), "head_options.target_precision is 2"),
        ("/format", json!(0), "format is 0"),
        ("/aggregation", json!("median"), "the cbr metadata is not valid: unknown variant"),
        ("/preprocess/width", json!(-1), "the cbr metadata is not valid"),
    ];
    for (pointer, value, want) in cases {
        let mut json = good.clone();
        set(&mut json, pointer, value.clone());
        let err = open_all(&with_metadata(&bytes, &json))
            .unwrap_or_else(|| panic!("{pointer} = {value} was accepted"));
        assert!(err.contains(want), "{pointer} = {value}: {err:?} does not say {want:?}");
    }
    // Label count against the graph: one label (and its count) fewer than `scores` has.
    let mut json = good.clone();
    json["labels"].as_array_mut().unwrap().pop();
    json["images_per_label"].as_array_mut().unwrap().pop();
    let err = open_all(&with_metadata(&bytes, &json)).expect("a missing label is refused");
    assert!(
        err.contains(
            "labels has 2 labels and an unknown entry but the model's output \"scores\" has 4"
        ),
        "{err}"
    );
    // The unknown entry's name may not be a class, and needs its novelty.
    let mut json = good.clone();
    json["unknown_label"] = json!("class1");
    let err = open_all(&with_metadata(&bytes, &json)).expect("a class as the unknown entry");
    assert!(err.contains("unknown_label is \"class1\", which is also a class"), "{err}");
    let mut json = good.clone();
    json.as_object_mut().unwrap().remove("novelty");
    let err = open_all(&with_metadata(&bytes, &json)).expect("an unknown entry without novelty");
    assert!(err.contains("novelty is missing"), "{err}");
    // No metadata, or not a model at all.
    let mut model = onnx::decode(&bytes).unwrap();
    model.metadata_props.clear();
    let err = open_all(&onnx::encode(&model)).unwrap();
    assert!(err.contains("no cbr metadata"), "{err}");
    let err = open_all(b"\x01\x02 certainly not a model").unwrap();
    assert!(err.contains("neither an ONNX nor a TFLite model"), "{err}");
}

/// Property: whatever single field is set to whatever hostile value, opening
/// gives either a valid model or a clear metadata error, never a panic.
#[test]
fn random_field_mutations_give_a_clear_error_or_a_valid_model() {
    let bytes = classifier(&HeadOptions::default());
    let good = metadata_json(&bytes);
    let mut fields = Vec::new();
    pointers(&good, String::new(), &mut fields);
    let hostile = [
        json!(null),
        json!(0),
        json!(-1),
        json!(1),
        json!(3),
        json!(100000),
        json!(4294967296u64),
        json!(1e39),
        json!(-1e39),
        json!(0.0),
        json!(0.5),
        json!(""),
        json!("class0"),
        json!("x".repeat(300)),
        json!([]),
        json!([0, 0, 0]),
        json!({}),
        json!(true),
    ];
    let mut rng = SplitMix64::new(2024);
    let (mut refused, mut accepted) = (0, 0);
    for _ in 0..600 {
        let mut json = good.clone();
        // One to three fields at once: interactions between fields count too.
        for _ in 0..1 + rng.below(3) {
            let field = &fields[rng.below(fields.len())];
            if let Some(slot) = json.pointer_mut(field) {
                *slot = hostile[rng.below(hostile.len())].clone();
            }
        }
        match open_all(&with_metadata(&bytes, &json)) {
            Some(err) => {
                assert!(err.contains("cbr metadata"), "unclear error {err:?} for {json}");
                refused += 1;
            }
            None => {
                // Accepted: then it is a model the rest of cbr can use.
                let info = read(&with_metadata(&bytes, &json)).unwrap().info;
                assert!(info.preprocess.tensor_len() <= 3 * 8192 * 8192);
                assert!(info.preprocess.std.iter().all(|s| *s != 0.0 && s.is_finite()));
                assert_eq!(info.labels.len(), info.images_per_label.len());
                accepted += 1;
            }
        }
    }
    // Most mutations break something; some (a name, a version string) do not.
    assert!(refused > 300 && accepted > 10, "refused {refused}, accepted {accepted}");
}

#[test]
fn formats_by_name_and_content() {
    use std::path::Path;
    assert_eq!(ModelFormat::for_output(Path::new("m.TFLite"), None), ModelFormat::Tflite);
    assert_eq!(ModelFormat::for_output(Path::new("m.model"), None), ModelFormat::Onnx);
    assert_eq!(
        ModelFormat::for_output(Path::new("m.onnx"), Some(ModelFormat::Tflite)),
        ModelFormat::Tflite
    );
    assert_eq!(ModelFormat::sniff(b"\x1c\0\0\0TFL3rest"), ModelFormat::Tflite);
    assert_eq!(ModelFormat::sniff(b"\x08\x07\x12\x04onnx"), ModelFormat::Onnx);
    assert_eq!(ModelFormat::Tflite.download_name("birds"), "birds.tflite");
    assert_eq!(ModelFormat::Onnx.stored_name(), "model.onnx");
}

/// `bytes` with the initializer `name` changed by `change`.
fn with_tensor(bytes: &[u8], name: &str, change: impl FnOnce(&mut onnx::TensorProto)) -> Vec<u8> {
    let mut model = onnx::decode(bytes).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let t = graph
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no initializer {name}"));
    change(t);
    onnx::encode(&model)
}

/// Issue 26, item 3 and 5: the stored index is checked by the one reader, so no command (add,
/// remove, classify, info, export-web) runs on, or writes, a damaged head.
#[test]
fn a_damaged_stored_index_is_refused_by_the_reader() {
    use cbr_core::head::graph::{INDEX_SCALES, INDEX_UNITS, INDEX_UNITS_BY_DIM};
    let bytes = classifier(&HeadOptions::default());
    assert!(read(&bytes).is_ok());
    // A NaN among the index rows.
    let nan = with_tensor(&bytes, INDEX_UNITS, |t| {
        t.raw_data.as_mut().unwrap()[4..8].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    let err = open_all(&nan).expect("a NaN index value is refused");
    assert!(err.contains("invalid stored tensor cbr/index_embeddings: value 1 is NaN"), "{err}");
    // Rows of another width than the metadata's embedder.dim (1000-d rows in a 1280-d model).
    let narrow = with_tensor(&bytes, INDEX_UNITS, |t| {
        t.dims = vec![12, DIM as i64 - 2];
        t.raw_data.as_mut().unwrap().truncate(12 * (DIM - 2) * 4);
    });
    let err = open_all(&narrow).expect("narrower rows are refused");
    assert!(err.contains("shape [12, 6]") && err.contains("cbr metadata"), "{err}");
    // The metadata's embedder.dim tampered (1281 in a 1280-d model: `add` panicked).
    let mut json = metadata_json(&bytes);
    set(&mut json, "/embedder/dim", json!(DIM + 1));
    let err = open_all(&with_metadata(&bytes, &json)).expect("a wrong embedder.dim is refused");
    assert!(err.contains("describe 12 index rows of 9 values"), "{err}");
    // int8 rows: every scale 0 (the model answered garbage), or one NaN.
    let opts =
        HeadOptions { index_dtype: cbr_core::head::IndexDtype::Int8, ..HeadOptions::default() };
    let int8 = classifier(&opts);
    assert!(read(&int8).is_ok());
    let zero = with_tensor(&int8, INDEX_SCALES, |t| {
        let n = t.raw_data.as_ref().map_or(t.float_data.len() * 4, Vec::len);
        t.raw_data = Some(vec![0; n]);
        t.float_data.clear();
    });
    let err = open_all(&zero).expect("zero scales are refused");
    assert!(err.contains("cbr/index_scales: scale 0 is 0"), "{err}");
    let short = with_tensor(&int8, INDEX_UNITS_BY_DIM, |t| t.dims = vec![DIM as i64, 11]);
    assert!(open_all(&short).expect("a wrong row count is refused").contains("shape [8, 11]"));
}

/// Issue 26, item 4: a label with a line break would split TFLite's labelmap.txt into more
/// lines than scores: the reader refuses it, and the writer never writes it.
#[test]
fn a_label_with_a_line_break_is_neither_read_nor_written() {
    let bytes = classifier(&HeadOptions::default());
    let mut json = metadata_json(&bytes);
    set(&mut json, "/labels/1", json!("two\nlines"));
    let err = open_all(&with_metadata(&bytes, &json)).expect("a label with LF is refused");
    assert!(err.contains("labels[1] is \"two\\nlines\", which holds a line break"), "{err}");
    let labels: Vec<String> = (0..4).map(|i| ["a", "b\r"][i / 2].to_string()).collect();
    let embeddings = SplitMix64::new(3).uniform_vec(4 * DIM, 0.0, 4.0);
    let head = RetrievalHead::new(&embeddings, DIM, &labels, &HeadOptions::original()).unwrap();
    let info = EmbedderInfo {
        name: "tiny".into(),
        sha256: "0".repeat(64),
        input: "input".into(),
        output: "features".into(),
        dim: DIM,
    };
    let err = write_classifier(
        EmbedderGraph::Onnx(&testing::tiny_onnx_embedder(DIM, 17, 7)),
        &info,
        &Preprocess::raw(2, 2, Layout::Nchw),
        head,
        &WriteOptions::default(),
    )
    .expect_err("a label with CR is not written");
    assert!(format!("{err:#}").contains("holds a line break"), "{err:#}");
}

/// Issue 26, item 2: build options no readable model can hold are refused before any work,
/// named as the command line's flags.
#[test]
fn build_options_are_checked_before_any_work() {
    use crate::build::BuildOptions;
    let with = |head: HeadOptions| BuildOptions { head, ..BuildOptions::default() }.validate();
    let d = HeadOptions::default();
    for (head, want) in [
        (HeadOptions { power: f32::NAN, ..d.clone() }, "--power: it is NaN"),
        (HeadOptions { power: f32::INFINITY, ..d.clone() }, "--power: it is inf"),
        (HeadOptions { power: 0.0, ..d.clone() }, "--power: it is 0; must be above 0"),
        (HeadOptions { known_target: Some(2.0), ..d.clone() }, "--known-target: it is 2"),
        (HeadOptions { target_precision: Some(5.0), ..d.clone() }, "--target-precision: it is 5"),
        (HeadOptions { threshold: Some(f32::NAN), ..d.clone() }, "--threshold: it is NaN"),
    ] {
        let err = with(head).expect_err(want);
        assert_eq!(kind_of(&err), ErrorKind::BadInput);
        assert!(format!("{err:#}").contains(want), "{err:#} does not say {want:?}");
    }
    assert!(with(d).is_ok());
    assert!(with(HeadOptions::original()).is_ok());
    assert!(crate::classifier::check_threshold(Some(f32::NAN)).is_err());
    assert!(crate::classifier::check_threshold(Some(0.0)).is_ok());
}
