//! Editing an unpacked TFLite model: adding tensors, constant buffers and
//! operators to a subgraph, and packing the model back with its raw buffers
//! 16-byte aligned (the schema's `force_align`, which flatc's Rust object API
//! does not apply).

use anyhow::{bail, Context, Result};
use flatbuffers::{FlatBufferBuilder, Push, PushAlignment, WIPOffset};

use super::schema::model::{
    root_as_model_with_opts, BufferT, BuiltinOperator, BuiltinOptionsT, Model, ModelArgs, ModelT,
    OperatorCodeT, OperatorT, QuantizationParametersT, TensorT, TensorType, MODEL_IDENTIFIER,
};

/// An unpacked model being extended, with subgraph 0 as the one edited.
pub struct ModelEditor {
    pub model: ModelT,
    /// The buffer holding no data, shared by every non-constant tensor added.
    empty_buffer: u32,
}

/// Parses a `.tflite` file's flatbuffer (any appended associated-files zip is ignored).
pub fn unpack(bytes: &[u8]) -> Result<ModelT> {
    if bytes.len() < 8 || &bytes[4..8] != MODEL_IDENTIFIER.as_bytes() {
        bail!("not a TFLite model: the file identifier is not {MODEL_IDENTIFIER:?}");
    }
    // Large models hold a few hundred thousand tables; the default verifier limits are for
    // small messages.
    let opts = flatbuffers::VerifierOptions {
        max_tables: 1 << 28,
        max_apparent_size: 1 << 31,
        ..Default::default()
    };
    let model =
        root_as_model_with_opts(&opts, bytes).context("the TFLite flatbuffer is malformed")?;
    Ok(model.unpack())
}

impl ModelEditor {
    pub fn new(mut model: ModelT) -> Result<Self> {
        let buffers = model.buffers.get_or_insert_with(Vec::new);
        if buffers.iter().any(|b| b.offset > 1) {
            bail!(
                "the model keeps its weights outside the flatbuffer \
                 (buffer offsets, for models over 2 GB): not supported"
            );
        }
        if model.subgraphs.as_ref().is_none_or(|s| s.is_empty()) {
            bail!("the model has no subgraph");
        }
        let empty_buffer = match buffers.first() {
            Some(b) if b.data.as_ref().is_none_or(|d| d.is_empty()) => 0,
            _ => {
                buffers.push(BufferT::default());
                (buffers.len() - 1) as u32
            }
        };
        Ok(ModelEditor { model, empty_buffer })
    }

    pub fn tensors(&self) -> &[TensorT] {
        self.model.subgraphs.as_ref().unwrap()[0].tensors.as_deref().unwrap_or(&[])
    }

    fn subgraph(&mut self) -> &mut super::schema::model::SubGraphT {
        &mut self.model.subgraphs.as_mut().unwrap()[0]
    }

    /// Adds a buffer holding `data`; returns its index.
    pub fn add_buffer(&mut self, data: Vec<u8>) -> u32 {
        let buffers = self.model.buffers.get_or_insert_with(Vec::new);
        buffers.push(build!(BufferT { data: Some(data) }));
        (buffers.len() - 1) as u32
    }

    fn push_tensor(&mut self, t: TensorT) -> i32 {
        let tensors = self.subgraph().tensors.get_or_insert_with(Vec::new);
        tensors.push(t);
        (tensors.len() - 1) as i32
    }

    /// A tensor computed at run time. A `-1` in `shape` is a dimension the
    /// runtime may resize (the batch); the static shape uses 1 there.
    pub fn activation(
        &mut self,
        name: &str,
        ty: TensorType,
        shape: &[i32],
        quant: Option<QuantizationParametersT>,
    ) -> i32 {
        let fixed: Vec<i32> = shape.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
        let signature = if shape.iter().any(|&d| d < 0) { Some(shape.to_vec()) } else { None };
        let buffer = self.empty_buffer;
        self.push_tensor(build!(TensorT {
            shape: Some(fixed),
            shape_signature: signature,
            type_: ty,
            buffer,
            name: Some(name.to_string()),
            quantization: quant.map(Box::new)
        }))
    }

    /// A constant tensor with raw little-endian `data`.
    pub fn constant(
        &mut self,
        name: &str,
        ty: TensorType,
        shape: &[i32],
        data: Vec<u8>,
        quant: Option<QuantizationParametersT>,
    ) -> i32 {
        let buffer = self.add_buffer(data);
        self.push_tensor(build!(TensorT {
            shape: Some(shape.to_vec()),
            type_: ty,
            buffer,
            name: Some(name.to_string()),
            quantization: quant.map(Box::new)
        }))
    }

    pub fn const_f32(&mut self, name: &str, shape: &[i32], values: &[f32]) -> i32 {
        self.constant(
            name,
            TensorType::FLOAT32,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            None,
        )
    }

    pub fn const_i32(&mut self, name: &str, shape: &[i32], values: &[i32]) -> i32 {
        self.constant(
            name,
            TensorType::INT32,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            None,
        )
    }

    /// The index of the operator code for `op` at `version`, added if missing.
    fn opcode(&mut self, op: BuiltinOperator, version: i32) -> u32 {
        let codes = self.model.operator_codes.get_or_insert_with(Vec::new);
        let code_of = |c: &OperatorCodeT| {
            if c.builtin_code.0 != 0 {
                c.builtin_code
            } else {
                BuiltinOperator(c.deprecated_builtin_code as i32)
            }
        };
        if let Some(i) = codes
            .iter()
            .position(|c| c.custom_code.is_none() && code_of(c) == op && c.version == version)
        {
            return i as u32;
        }
        // Readers older than schema v3a only look at `deprecated_builtin_code`;
        // codes past 127 are marked there as PLACEHOLDER_FOR_GREATER_OP_CODES.
        let deprecated = op.0.min(BuiltinOperator::PLACEHOLDER_FOR_GREATER_OP_CODES.0) as i8;
        codes.push(build!(OperatorCodeT {
            builtin_code: op,
            deprecated_builtin_code: deprecated,
            version,
            custom_code: None
        }));
        (codes.len() - 1) as u32
    }

    /// Appends an operator (`-1` in `inputs` is an omitted optional input).
    pub fn op(
        &mut self,
        op: BuiltinOperator,
        version: i32,
        inputs: &[i32],
        outputs: &[i32],
        options: BuiltinOptionsT,
    ) {
        let opcode_index = self.opcode(op, version);
        self.subgraph().operators.get_or_insert_with(Vec::new).push(build!(OperatorT {
            opcode_index,
            inputs: Some(inputs.to_vec()),
            outputs: Some(outputs.to_vec()),
            builtin_options: options
        }));
    }

    pub fn set_outputs(&mut self, outputs: &[i32]) {
        self.subgraph().outputs = Some(outputs.to_vec());
    }

    pub fn operator_count(&self) -> usize {
        self.model.subgraphs.as_ref().unwrap()[0].operators.as_ref().map_or(0, |o| o.len())
    }
}

/// One byte of raw buffer data whose vector must start 16-byte aligned.
#[derive(Clone, Copy)]
struct AlignedByte(u8);

impl Push for AlignedByte {
    type Output = u8;
    // SAFETY: writes only `dst[0]`, the one byte `size()` (1, from `Output = u8`) reserves.
    unsafe fn push(&self, dst: &mut [u8], _written_len: usize) {
        dst[0] = self.0;
    }
    fn alignment() -> PushAlignment {
        PushAlignment::new(16)
    }
}

/// Serialises a model, placing every buffer's data 16-byte aligned.
pub fn pack(model: &ModelT) -> Vec<u8> {
    let size_hint = model
        .buffers
        .iter()
        .flatten()
        .map(|b| b.data.as_ref().map_or(0, |d| d.len() + 16))
        .sum::<usize>()
        + (1 << 20);
    let mut fbb = FlatBufferBuilder::with_capacity(size_hint);
    // Buffers first: their data dominates the file, and the rest refers to them by index only.
    let buffers = model.buffers.as_ref().map(|bs| {
        let packed: Vec<_> = bs
            .iter()
            .map(|b| {
                let data = b.data.as_ref().map(|d| {
                    fbb.start_vector::<AlignedByte>(d.len());
                    for &x in d.iter().rev() {
                        fbb.push(x);
                    }
                    fbb.end_vector::<u8>(d.len())
                });
                super::schema::model::Buffer::create(
                    &mut fbb,
                    &super::schema::model::BufferArgs { data, offset: b.offset, size: b.size },
                )
            })
            .collect();
        fbb.create_vector(&packed)
    });
    let root = pack_rest(&mut fbb, model, buffers);
    fbb.finish(root, Some(MODEL_IDENTIFIER));
    fbb.finished_data().to_vec()
}

type BuffersOffset<'a> = WIPOffset<
    flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<super::schema::model::Buffer<'a>>>,
>;

/// Everything of `ModelT::pack` except the buffers (packed by [`pack`]).
fn pack_rest<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    m: &ModelT,
    buffers: Option<BuffersOffset<'a>>,
) -> WIPOffset<Model<'a>> {
    macro_rules! tables {
        ($field:expr) => {
            $field.as_ref().map(|x| {
                let w: Vec<_> = x.iter().map(|t| t.pack(fbb)).collect();
                fbb.create_vector(&w)
            })
        };
    }
    let operator_codes = tables!(m.operator_codes);
    let subgraphs = tables!(m.subgraphs);
    let description = m.description.as_ref().map(|s| fbb.create_string(s));
    let metadata_buffer = m.metadata_buffer.as_ref().map(|x| fbb.create_vector(x));
    let metadata = tables!(m.metadata);
    let signature_defs = tables!(m.signature_defs);
    let external_buffer_groups = tables!(m.external_buffer_groups);
    let external_buffers = tables!(m.external_buffers);
    Model::create(
        fbb,
        &ModelArgs {
            version: m.version,
            operator_codes,
            subgraphs,
            description,
            buffers,
            metadata_buffer,
            metadata,
            signature_defs,
            external_buffer_groups,
            external_buffers,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_aligns_buffer_data_and_round_trips() {
        let mut model = build!(ModelT { version: 3, subgraphs: Some(vec![Default::default()]) });
        model.buffers = Some(vec![BufferT::default()]);
        let mut ed = ModelEditor::new(model).unwrap();
        let a = ed.const_f32("a", &[3], &[1.0, 2.0, 3.0]);
        let b = ed.const_i32("b", &[1], &[7]);
        let y = ed.activation("y", TensorType::FLOAT32, &[-1, 3], None);
        ed.op(BuiltinOperator::ADD, 1, &[a, a], &[y], BuiltinOptionsT::NONE);
        ed.op(BuiltinOperator::ADD, 1, &[y, b], &[y], BuiltinOptionsT::NONE);
        ed.set_outputs(&[y]);
        let bytes = pack(&ed.model);
        let back = unpack(&bytes).unwrap();
        assert_eq!(back, ed.model, "unpack(pack(m)) == m");
        assert_eq!(
            back.operator_codes.as_ref().unwrap().len(),
            1,
            "one opcode entry per (op, version)"
        );
        let m = super::super::schema::model::root_as_model(&bytes).unwrap();
        for buf in m.buffers().unwrap().iter() {
            if let Some(d) = buf.data() {
                if !d.is_empty() {
                    let offset = d.bytes().as_ptr() as usize - bytes.as_ptr() as usize;
                    assert_eq!(offset % 16, 0, "buffer data at offset {offset}");
                }
            }
        }
        assert_eq!(pack(&back), bytes, "packing is deterministic");
        assert!(unpack(b"not a model").is_err());
    }
}
