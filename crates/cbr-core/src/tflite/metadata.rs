//! TFLite Model Metadata for a cbr classifier, as the TFLite Task Library and
//! MediaPipe read it: the `TFLITE_METADATA` flatbuffer (name, description,
//! author, version, licence; the input's image properties, normalisation and
//! value range; the output's labels and score threshold) and the zip of
//! associated files (`labelmap.txt`) appended to the model file, as
//! tflite-support's MetadataPopulator lays it out.

use std::io::{Cursor, Write};

use anyhow::Result;
use flatbuffers::FlatBufferBuilder;

use super::schema::metadata::{
    finish_model_metadata_buffer, AssociatedFileT, AssociatedFileType, ColorSpaceType,
    ContentPropertiesT, ContentT, ImagePropertiesT, ModelMetadataT, NormalizationOptionsT,
    ProcessUnitOptionsT, ProcessUnitT, ScoreThresholdingOptionsT, StatsT, SubGraphMetadataT,
    TensorMetadataT,
};
use crate::meta::ClassifierInfo;
use crate::preprocess::ChannelOrder;

/// Name of the model metadata entry holding the TFLite Model Metadata flatbuffer.
pub const TFLITE_METADATA: &str = "TFLITE_METADATA";
/// The associated file with one label per line, in the order of `scores`.
pub const LABEL_FILE: &str = "labelmap.txt";
/// The oldest metadata parser that reads everything written here, as
/// tflite-support's `GetMinimumMetadataParserVersion` computes it for these
/// fields (image properties, normalisation, stats, label file, score threshold).
pub const MIN_PARSER_VERSION: &str = "1.0.0";

/// What the model says about itself in human terms (`cbr build` flags).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct About {
    pub name: Option<String>,
    pub description: Option<String>,
    pub author: Option<String>,
    pub version: Option<String>,
    pub license: Option<String>,
}

/// Whether the image input is float (normalised by the client) or raw 8-bit pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Float,
    Uint8,
}

/// The `TFLITE_METADATA` flatbuffer for a classifier described by `info`.
pub fn model_metadata(info: &ClassifierInfo, about: &About, input: InputKind) -> Vec<u8> {
    let p = &info.preprocess;
    let n_images: usize = info.images_per_label.iter().sum();
    let description = about.description.clone().unwrap_or_else(|| {
        let scores = if info.temperature.is_some() {
            ", calibrated softmax scores"
        } else {
            ", cosine-similarity scores"
        };
        format!(
            "Classification by retrieval: {} classes from {} labelled images, embedder {}, \
             {} aggregation{scores}.",
            info.labels.len(),
            n_images,
            info.embedder.name,
            info.aggregation,
        )
    });
    let (stats_min, stats_max): (Vec<f32>, Vec<f32>) = match input {
        // The input tensor's value range after normalisation, per channel.
        InputKind::Float => {
            (0..3).map(|c| ((0.0 - p.mean[c]) / p.std[c], (255.0 - p.mean[c]) / p.std[c])).unzip()
        }
        InputKind::Uint8 => (vec![0.0], vec![255.0]),
    };
    let image = build!(TensorMetadataT {
        name: Some("image".into()),
        description: Some(format!(
            "{}x{} RGB image, whole image resized to the input size",
            p.width, p.height
        )),
        content: Some(Box::new(build!(ContentT {
            content_properties: ContentPropertiesT::ImageProperties(Box::new(build!(
                ImagePropertiesT {
                    color_space: if p.channel_order == ChannelOrder::Rgb {
                        ColorSpaceType::RGB
                    } else {
                        ColorSpaceType::UNKNOWN
                    }
                }
            )))
        }))),
        process_units: Some(vec![build!(ProcessUnitT {
            options: ProcessUnitOptionsT::NormalizationOptions(Box::new(build!(
                NormalizationOptionsT { mean: Some(p.mean.to_vec()), std_: Some(p.std.to_vec()) }
            )))
        })]),
        stats: Some(Box::new(build!(StatsT { min: Some(stats_min), max: Some(stats_max) })))
    });
    let (score_min, score_max) = if info.temperature.is_some() { (0.0, 1.0) } else { (-1.0, 1.0) };
    let scores = build!(TensorMetadataT {
        name: Some("scores".into()),
        description: Some(if let Some(u) = &info.unknown_label {
            format!(
                "Probability of each class, and last the probability {u:?} that the image is of \
                 none of them (from its similarity to the class means); they sum to 1 and the \
                 best entry is the answer."
            )
        } else if info.temperature.is_some() {
            "Probability of each class (softmax of the class similarities with the calibrated \
             temperature)."
                .into()
        } else {
            "Similarity of the image to each class (cosine or discriminant score).".into()
        }),
        content: Some(Box::new(build!(ContentT {
            content_properties: ContentPropertiesT::FeatureProperties(Box::default())
        }))),
        process_units: info.threshold.map(|t| {
            vec![build!(ProcessUnitT {
                options: ProcessUnitOptionsT::ScoreThresholdingOptions(Box::new(build!(
                    ScoreThresholdingOptionsT { global_score_threshold: t }
                )))
            })]
        }),
        stats: Some(Box::new(build!(StatsT {
            min: Some(vec![score_min]),
            max: Some(vec![score_max])
        }))),
        associated_files: Some(vec![build!(AssociatedFileT {
            name: Some(LABEL_FILE.into()),
            description: Some("Class labels, one per line, in the order of the scores.".into()),
            type_: AssociatedFileType::TENSOR_AXIS_LABELS
        })])
    });
    let meta = build!(ModelMetadataT {
        name: Some(about.name.clone().unwrap_or_else(|| "cbr image classifier".into())),
        description: Some(description),
        version: about.version.clone(),
        author: about.author.clone(),
        license: about.license.clone(),
        subgraph_metadata: Some(vec![build!(SubGraphMetadataT {
            name: Some("image_classifier".into()),
            input_tensor_metadata: Some(vec![image]),
            output_tensor_metadata: Some(vec![scores])
        })]),
        min_parser_version: Some(MIN_PARSER_VERSION.into())
    });
    let mut fbb = FlatBufferBuilder::new();
    let root = meta.pack(&mut fbb);
    finish_model_metadata_buffer(&mut fbb, root);
    fbb.finished_data().to_vec()
}

/// The text of `labelmap.txt`.
pub fn label_file(labels: &[String]) -> String {
    let mut s = String::new();
    for l in labels {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// `model` followed by a zip of `files`, whose offsets count from the start of
/// the whole file (as Python's zipfile writes when appending, and as the
/// metadata extractors read). Entries are stored uncompressed with a fixed
/// timestamp, so the output depends on the inputs only.
pub fn append_zip(model: Vec<u8>, files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let start = model.len() as u64;
    let mut cursor = Cursor::new(model);
    cursor.set_position(start);
    let mut zip = zip::ZipWriter::new(cursor);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    for (name, data) in files {
        zip.start_file(*name, opts)?;
        zip.write_all(data)?;
    }
    Ok(zip.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn appended_zip_is_readable_and_deterministic() {
        let model = vec![7u8; 100];
        let a = append_zip(model.clone(), &[(LABEL_FILE, b"cat\ndog\n")]).unwrap();
        let b = append_zip(model.clone(), &[(LABEL_FILE, b"cat\ndog\n")]).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[..100], &model[..]);
        let mut z = zip::ZipArchive::new(Cursor::new(&a)).unwrap();
        let mut s = String::new();
        z.by_name(LABEL_FILE).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "cat\ndog\n");
    }
}
