//! Reads the float32 tensors of a PyTorch checkpoint saved in the *legacy*
//! (pre-1.6, non-zip) `torch.save` format, without PyTorch.
//!
//! A legacy `.pth` file is five pickles in a row followed by raw storage bytes:
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c`,
//! 2. the protocol version `1001`,
//! 3. a `sys_info` dict (endianness, type sizes),
//! 4. the pickled object, here the state dict: an `OrderedDict` of name ->
//!    tensor, each built by `torch._utils._rebuild_tensor_v2(storage, offset,
//!    size, stride, ...)` where `storage` is a *persistent id*
//!    `('storage', torch.FloatStorage, key, location, numel, None)`,
//! 5. the list of storage keys, in the order their bytes follow;
//!
//! then, for each key of that list: a little-endian `u64` element count and the
//! storage's raw little-endian elements.
//!
//! We implement just enough of the pickle virtual machine for these files
//! rather than use a crate: `serde-pickle` cannot resolve torch's persistent
//! ids, and `candle` is far too heavy for reading one file. Any opcode or
//! callable outside that small set is reported as an error, never guessed at.

use std::collections::HashMap;

use anyhow::{anyhow, bail, ensure, Context, Result};

/// A dense float32 tensor in row-major (C) order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The magic number that opens every legacy `torch.save` file.
const MAGIC: u128 = 0x1950a86a20f9469cfc6c;
/// The only legacy protocol version PyTorch has ever written.
const PROTOCOL_VERSION: i64 = 1001;

/// Reads a legacy-format PyTorch state dict: every float32 tensor, by name, in
/// file order.
///
/// Integer tensors named `*.num_batches_tracked` (BatchNorm's training-step
/// counter, meaningless for inference) are left out; any other tensor whose
/// storage is not float32 is an error.
pub fn read_state_dict(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    if bytes.starts_with(b"PK\x03\x04") {
        bail!(
            "this is a zip-format checkpoint (torch.save from PyTorch >= 1.6); \
             only the legacy format is supported"
        );
    }
    let mut pos = 0;
    let mut storages = HashMap::new();

    let magic = next_pickle(bytes, &mut pos, &mut storages).context("reading the magic number")?;
    ensure!(
        matches!(magic, Value::Int(m) if m == MAGIC),
        "not a legacy PyTorch checkpoint: the file does not start with torch's magic number"
    );
    let protocol =
        next_pickle(bytes, &mut pos, &mut storages).context("reading the protocol version")?;
    ensure!(
        matches!(protocol, Value::Int(p) if p == PROTOCOL_VERSION as u128),
        "unsupported torch.save protocol version {protocol:?} (expected {PROTOCOL_VERSION})"
    );
    let sys_info = next_pickle(bytes, &mut pos, &mut storages).context("reading sys_info")?;
    if let Value::Dict(entries) = &sys_info {
        let big_endian = entries.iter().any(
            |(k, v)| matches!((k, v), (Value::Str(k), Value::Bool(false)) if k == "little_endian"),
        );
        ensure!(!big_endian, "the checkpoint was written on a big-endian machine; not supported");
    }
    let state =
        next_pickle(bytes, &mut pos, &mut storages).context("reading the state dict pickle")?;
    let keys =
        next_pickle(bytes, &mut pos, &mut storages).context("reading the storage key list")?;

    // The raw storages follow, in the order of the key list.
    let Value::List(keys) = keys else {
        bail!("expected a list of storage keys after the state dict, got {keys:?}")
    };
    let mut raw: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else { bail!("storage key {key:?} is not a string") };
        let info = storages
            .get(&key)
            .ok_or_else(|| anyhow!("storage {key} is listed but no tensor uses it"))?;
        let count = read_u64(bytes, pos)
            .with_context(|| format!("storage {key}: truncated element count"))?;
        ensure!(
            count == info.numel,
            "storage {key}: the file holds {count} elements but the pickle declared {}",
            info.numel
        );
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(info.elem_size))
            .ok_or_else(|| anyhow!("storage {key}: element count {count} is too large"))?;
        let start = pos + 8;
        let data = bytes.get(start..start.saturating_add(len)).ok_or_else(|| {
            anyhow!("storage {key}: file truncated ({len} bytes expected at offset {start})")
        })?;
        raw.insert(key, data);
        pos = start + len;
    }

    let Value::Dict(entries) = state else {
        bail!("the checkpoint does not hold a state dict (an OrderedDict), got {state:?}")
    };
    let mut out = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let Value::Str(name) = name else { bail!("state dict key {name:?} is not a string") };
        let Value::Tensor(t) = value else {
            bail!("state dict entry {name} is not a tensor: {value:?}")
        };
        let info = storages
            .get(&t.storage)
            .ok_or_else(|| anyhow!("tensor {name}: unknown storage {}", t.storage))?;
        if info.type_name != "FloatStorage" {
            if name.ends_with(".num_batches_tracked") {
                continue;
            }
            bail!(
                "tensor {name} is stored as torch.{}; \
                 only float32 (torch.FloatStorage) is supported",
                info.type_name
            );
        }
        let bytes = raw.get(&t.storage).ok_or_else(|| {
            anyhow!("tensor {name}: its storage {} is missing from the key list", t.storage)
        })?;
        let tensor = gather(bytes, &t).with_context(|| format!("tensor {name}"))?;
        out.push((name, tensor));
    }
    Ok(out)
}

fn read_u64(bytes: &[u8], pos: usize) -> Option<u64> {
    let b = bytes.get(pos..pos.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Copies a (possibly strided) view of a float32 storage into a dense
/// row-major tensor. Strides matter: these checkpoints were converted from
/// TensorFlow, and their conv weights are permuted views of HWIO storages.
fn gather(storage: &[u8], t: &TensorRef) -> Result<Tensor> {
    let numel = storage.len() / 4;
    let count = t.size.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n));
    // Only views that touch each storage element at most once (no stride-0
    // broadcasts), so a corrupt header cannot ask for more memory than the file holds.
    let count = count.filter(|&c| c <= numel).ok_or_else(|| {
        anyhow!(
            "size {:?} has more elements than its storage ({numel}); \
             overlapping views are not supported",
            t.size
        )
    })?;
    let mut data = Vec::with_capacity(count);
    if count > 0 {
        // Largest storage index the view touches; checking it once bounds every element.
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (&n, &s)| acc.checked_add((n - 1).checked_mul(s)?));
        ensure!(
            last.is_some_and(|last| last < numel),
            "the view (offset {}, size {:?}, stride {:?}) reaches past its storage of \
             {numel} elements",
            t.offset,
            t.size,
            t.stride
        );
        let mut index = vec![0usize; t.size.len()];
        for _ in 0..count {
            let at = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            let b = &storage[at * 4..at * 4 + 4];
            data.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            // Odometer increment, last axis fastest.
            for axis in (0..index.len()).rev() {
                index[axis] += 1;
                if index[axis] < t.size[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
    }
    Ok(Tensor { shape: t.size.clone(), data })
}

/// What the state dict pickle declared about one storage.
struct StorageInfo {
    type_name: String,
    elem_size: usize,
    numel: u64,
}

/// A tensor as `_rebuild_tensor_v2` describes it, before its storage bytes are read.
#[derive(Clone, Debug, PartialEq)]
struct TensorRef {
    storage: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// The Python values these pickles contain.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    /// Non-negative integers up to 128 bits (the magic number needs 77);
    /// negative ones never occur in these files and are rejected.
    Int(u128),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// A dict or OrderedDict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A `module.name` reference from GLOBAL.
    Global(String),
    /// A storage resolved from a persistent id: its key.
    Storage(String),
    Tensor(TensorRef),
}

/// Runs the pickle VM on the pickle starting at `*pos`, leaving `*pos` just
/// after its STOP. Storages met in persistent ids are recorded in `storages`.
fn next_pickle(
    bytes: &[u8],
    pos: &mut usize,
    storages: &mut HashMap<String, StorageInfo>,
) -> Result<Value> {
    let mut vm = Vm {
        bytes,
        pos: *pos,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        storages,
    };
    let value = vm.run()?;
    *pos = vm.pos;
    Ok(value)
}

struct Vm<'a, 's> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each MARK.
    marks: Vec<usize>,
    /// Memo entries are copies, not shared references. That is enough here:
    /// torch.save memoizes containers before filling them but never fetches a
    /// container back after mutating it (only globals, strings and tuples).
    memo: HashMap<u32, Value>,
    storages: &'s mut HashMap<String, StorageInfo>,
}

impl Vm<'_, '_> {
    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.take(1)?[0];
            self.step(op).with_context(|| {
                format!("pickle opcode 0x{op:02x} ({:?}) at byte {at}", op as char)
            })?;
            if op == b'.' {
                return self.pop();
            }
        }
    }

    fn step(&mut self, op: u8) -> Result<()> {
        match op {
            0x80 => {
                // PROTO: only protocols 2 and below use exactly the opcodes below.
                let proto = self.take(1)?[0];
                ensure!(
                    proto <= 2,
                    "pickle protocol {proto} is not supported (torch.save legacy files use 2)"
                );
            }
            b'.' => {} // STOP: handled by run()
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.stack.push(Value::Global(format!("{module}.{name}")));
            }
            b'q' => {
                let i = self.take(1)?[0] as u32;
                self.put(i)?;
            }
            b'r' => {
                let i = self.u32()?;
                self.put(i)?;
            }
            b'h' => {
                let i = self.take(1)?[0] as u32;
                self.get(i)?;
            }
            b'j' => {
                let i = self.u32()?;
                self.get(i)?;
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'}' => self.stack.push(Value::Dict(Vec::new())),
            b']' => self.stack.push(Value::List(Vec::new())),
            b')' => self.stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                ensure!(self.stack.len() >= n, "stack underflow");
                let items = self.stack.split_off(self.stack.len() - n);
                self.stack.push(Value::Tuple(items));
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.dict_top()?.push((key, value));
            }
            b'u' => {
                let items = self.pop_mark()?;
                ensure!(items.len() % 2 == 0, "SETITEMS with an odd number of items");
                let mut items = items.into_iter();
                let dict = self.dict_top()?;
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    dict.push((k, v));
                }
            }
            b'a' => {
                let value = self.pop()?;
                self.list_top()?.push(value);
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.list_top()?.extend(items);
            }
            b'J' => {
                let v = i32::from_le_bytes(self.take(4)?.try_into()?);
                ensure!(v >= 0, "negative integer {v} (not expected in a state dict)");
                self.stack.push(Value::Int(v as u128));
            }
            b'K' => {
                let v = self.take(1)?[0];
                self.stack.push(Value::Int(v as u128));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.take(2)?.try_into()?);
                self.stack.push(Value::Int(v as u128));
            }
            0x8a => {
                // LONG1: little-endian two's complement of the given length.
                let n = self.take(1)?[0] as usize;
                let b = self.take(n)?;
                ensure!(n <= 16, "integer of {n} bytes is too large");
                ensure!(
                    b.last().is_none_or(|&last| last & 0x80 == 0),
                    "negative integer (not expected in a state dict)"
                );
                let v = b.iter().rev().fold(0u128, |acc, &x| (acc << 8) | x as u128);
                self.stack.push(Value::Int(v));
            }
            b'X' => {
                let n = self.u32()? as usize;
                let s = self.utf8(n)?;
                self.stack.push(Value::Str(s));
            }
            0x8c => {
                let n = self.take(1)?[0] as usize;
                let s = self.utf8(n)?;
                self.stack.push(Value::Str(s));
            }
            b'T' => {
                let n = self.u32()? as usize;
                let s = self.utf8(n)?;
                self.stack.push(Value::Str(s));
            }
            b'U' => {
                let n = self.take(1)?[0] as usize;
                let s = self.utf8(n)?;
                self.stack.push(Value::Str(s));
            }
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'N' => self.stack.push(Value::None),
            b'G' => {
                let v = f64::from_be_bytes(self.take(8)?.try_into()?);
                self.stack.push(Value::Float(v));
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let result = reduce(callable, args)?;
                self.stack.push(result);
            }
            b'b' => {
                // BUILD sets attributes on the object below. The state dict's only
                // attribute is `_metadata` (module versions), which inference does
                // not need, so the state is dropped.
                self.pop()?;
                ensure!(!self.stack.is_empty(), "stack underflow");
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent_load(pid)?;
                self.stack.push(storage);
            }
            _ => bail!(
                "unsupported pickle opcode; this reader only handles torch.save legacy state dicts"
            ),
        }
        Ok(())
    }

    /// Resolves `('storage', torch.XStorage, key, location, numel, view_metadata)`.
    fn persistent_load(&mut self, pid: Value) -> Result<Value> {
        let Value::Tuple(items) = &pid else { bail!("persistent id {pid:?} is not a tuple") };
        use Value::{Global, Int, Str};
        let [Str(kind), Global(type_name), Str(key), Str(_), Int(numel), view] = items.as_slice()
        else {
            bail!("persistent id {pid:?} is not ('storage', type, key, location, numel, view)")
        };
        ensure!(kind == "storage", "persistent id of kind {kind:?}; only 'storage' is supported");
        ensure!(*view == Value::None, "storage {key} is a view of another storage; not supported");
        let type_name = type_name.strip_prefix("torch.").ok_or_else(|| {
            anyhow!("storage {key} has type {type_name}, which is not a torch storage")
        })?;
        let elem_size = match type_name {
            "DoubleStorage" | "LongStorage" => 8,
            "FloatStorage" | "IntStorage" => 4,
            "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
            "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
            _ => bail!("storage {key} has unknown type torch.{type_name}"),
        };
        let numel = u64::try_from(*numel)
            .map_err(|_| anyhow!("storage {key}: element count {numel} is too large"))?;
        self.storages.insert(
            key.clone(),
            StorageInfo { type_name: type_name.to_string(), elem_size, numel },
        );
        Ok(Value::Storage(key.clone()))
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end =
            end.ok_or_else(|| anyhow!("file truncated inside a pickle (at byte {})", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }

    fn utf8(&mut self, n: usize) -> Result<String> {
        Ok(std::str::from_utf8(self.take(n)?).context("string is not UTF-8")?.to_string())
    }

    /// A newline-terminated text argument (GLOBAL's module and name).
    fn line(&mut self) -> Result<String> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| anyhow!("file truncated inside a GLOBAL argument"))?;
        let s = self.utf8(n)?;
        self.pos += 1;
        Ok(s)
    }

    fn pop(&mut self) -> Result<Value> {
        ensure!(self.stack.len() > self.marks.last().copied().unwrap_or(0), "stack underflow");
        self.stack.pop().ok_or_else(|| anyhow!("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| anyhow!("no MARK on the stack"))?;
        Ok(self.stack.split_off(mark))
    }

    fn put(&mut self, i: u32) -> Result<()> {
        let top = self.stack.last().ok_or_else(|| anyhow!("memo put on an empty stack"))?;
        self.memo.insert(i, top.clone());
        Ok(())
    }

    fn get(&mut self, i: u32) -> Result<()> {
        let v = self.memo.get(&i).ok_or_else(|| anyhow!("memo entry {i} was never stored"))?;
        self.stack.push(v.clone());
        Ok(())
    }

    fn dict_top(&mut self) -> Result<&mut Vec<(Value, Value)>> {
        match self.stack.last_mut() {
            Some(Value::Dict(d)) => Ok(d),
            other => bail!("expected a dict on the stack, found {other:?}"),
        }
    }

    fn list_top(&mut self) -> Result<&mut Vec<Value>> {
        match self.stack.last_mut() {
            Some(Value::List(l)) => Ok(l),
            other => bail!("expected a list on the stack, found {other:?}"),
        }
    }
}

/// REDUCE: calls one of the few callables a state dict needs.
fn reduce(callable: Value, args: Value) -> Result<Value> {
    let Value::Global(name) = &callable else {
        bail!("REDUCE on {callable:?}, which is not a global")
    };
    let Value::Tuple(args) = args else { bail!("REDUCE arguments for {name} are not a tuple") };
    match name.as_str() {
        "collections.OrderedDict" => {
            ensure!(args.is_empty(), "collections.OrderedDict called with arguments");
            Ok(Value::Dict(Vec::new()))
        }
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        "torch._utils._rebuild_tensor_v2" => {
            let n = args.len();
            ensure!((6..=7).contains(&n), "_rebuild_tensor_v2 takes 6 or 7 arguments, got {n}");
            let Value::Storage(storage) = &args[0] else {
                bail!("_rebuild_tensor_v2: first argument {:?} is not a storage", args[0])
            };
            let offset = as_usize(&args[1]).context("_rebuild_tensor_v2: storage offset")?;
            let size = as_usizes(&args[2]).context("_rebuild_tensor_v2: size")?;
            let stride = as_usizes(&args[3]).context("_rebuild_tensor_v2: stride")?;
            ensure!(
                size.len() == stride.len(),
                "_rebuild_tensor_v2: size {size:?} and stride {stride:?} differ in rank"
            );
            Ok(Value::Tensor(TensorRef { storage: storage.clone(), offset, size, stride }))
        }
        _ => bail!(
            "the pickle calls {name}, which this reader does not support \
             (only OrderedDict and _rebuild_tensor_v2)"
        ),
    }
}

fn as_usize(v: &Value) -> Result<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| anyhow!("{i} is too large")),
        _ => bail!("expected an integer, got {v:?}"),
    }
}

fn as_usizes(v: &Value) -> Result<Vec<usize>> {
    match v {
        Value::Tuple(items) => items.iter().map(as_usize).collect(),
        _ => bail!("expected a tuple of integers, got {v:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a legacy checkpoint byte by byte, the way torch.save lays it out.
    struct Pickle(Vec<u8>);

    impl Pickle {
        fn new() -> Self {
            Pickle(vec![0x80, 2])
        }
        fn op(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn str(self, s: &str) -> Self {
            let mut b = vec![b'X'];
            b.extend_from_slice(&(s.len() as u32).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
            self.op(&b)
        }
        fn int(self, v: u8) -> Self {
            self.op(&[b'K', v])
        }
        fn ints(mut self, vs: &[u8]) -> Self {
            self = self.op(b"(");
            for &v in vs {
                self = self.int(v);
            }
            self.op(b"t")
        }
        fn stop(self) -> Vec<u8> {
            self.op(b".").0
        }
    }

    fn header() -> Vec<u8> {
        let mut out = Pickle::new().op(&[0x8a, 10]).op(&MAGIC.to_le_bytes()[..10]).stop();
        out.extend(Pickle::new().op(b"M").op(&1001u16.to_le_bytes()).stop());
        out.extend(Pickle::new().op(b"}").str("little_endian").op(&[0x88, b's']).stop());
        out
    }

    /// One `name: _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` entry,
    /// the storage given as (type, key, numel).
    fn entry(
        p: Pickle,
        name: &str,
        (ty, key, numel): (&str, &str, u8),
        offset: u8,
        size: &[u8],
        stride: &[u8],
    ) -> Pickle {
        p.str(name)
            .op(b"ctorch._utils\n_rebuild_tensor_v2\n")
            .op(b"((")
            .str("storage")
            .op(format!("ctorch\n{ty}\n").as_bytes())
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"NtQ")
            .int(offset)
            .ints(size)
            .ints(stride)
            .op(&[0x89])
            .op(b"ccollections\nOrderedDict\n)R")
            .op(b"tR")
    }

    fn checkpoint() -> Vec<u8> {
        let mut out = header();
        let mut p = Pickle::new().op(b"ccollections\nOrderedDict\nq\x00)Rq\x01(");
        // A 2x3 tensor stored transposed (as TF-converted weights are): stride (1, 2).
        p = entry(p, "w", ("FloatStorage", "k0", 6), 0, &[2, 3], &[1, 2]);
        p = entry(p, "bn.num_batches_tracked", ("LongStorage", "k1", 1), 0, &[], &[]);
        // A view at offset 1 into a shared storage.
        p = entry(p, "b", ("FloatStorage", "k2", 3), 1, &[2], &[1]);
        // BUILD with the `_metadata` attribute dict, as torch.save writes it.
        out.extend(p.op(b"u").op(b"}").str("_metadata").op(b"}s").op(b"b").stop());
        out.extend(Pickle::new().op(b"]q\x00(").str("k0").str("k1").str("k2").op(b"e").stop());
        let mut storage = |n: u64, elems: Vec<u8>| {
            out.extend(n.to_le_bytes());
            out.extend(elems);
        };
        storage(
            6,
            [0.0f32, 3.0, 1.0, 4.0, 2.0, 5.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        );
        storage(1, 7u64.to_le_bytes().to_vec());
        storage(3, [9.0f32, 10.0, 11.0].iter().flat_map(|v| v.to_le_bytes()).collect());
        out
    }

    #[test]
    fn reads_strided_views_in_file_order_and_skips_batch_counters() {
        let sd = read_state_dict(&checkpoint()).unwrap();
        let names: Vec<&str> = sd.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["w", "b"]);
        assert_eq!(sd[0].1, Tensor { shape: vec![2, 3], data: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0] });
        assert_eq!(sd[1].1, Tensor { shape: vec![2], data: vec![10.0, 11.0] });
    }

    #[test]
    fn rejects_truncated_files_and_foreign_formats() {
        let full = checkpoint();
        let err = read_state_dict(&full[..full.len() - 3]).unwrap_err();
        assert!(format!("{err:#}").contains("truncated"), "{err:#}");
        let err = read_state_dict(&full[..100]).unwrap_err();
        assert!(format!("{err:#}").contains("truncated"), "{err:#}");
        let err = read_state_dict(b"PK\x03\x04rest").unwrap_err();
        assert!(err.to_string().contains("zip-format"), "{err}");
        let err = read_state_dict(&Pickle::new().int(3).stop()).unwrap_err();
        assert!(err.to_string().contains("magic number"), "{err}");
    }

    #[test]
    fn rejects_non_float_tensors_and_unknown_opcodes() {
        let mut out = header();
        let p = Pickle::new().op(b"ccollections\nOrderedDict\n)R(");
        let p = entry(p, "ids", ("LongStorage", "k0", 1), 0, &[1], &[1]);
        out.extend(p.op(b"u").stop());
        out.extend(Pickle::new().op(b"](").str("k0").op(b"e").stop());
        out.extend(1u64.to_le_bytes());
        out.extend(5u64.to_le_bytes());
        let err = read_state_dict(&out).unwrap_err();
        assert!(err.to_string().contains("tensor ids is stored as torch.LongStorage"), "{err}");

        let mut out = header();
        out.extend(Pickle::new().op(b"I1\n").stop()); // text-mode INT: not in our subset
        let err = read_state_dict(&out).unwrap_err();
        assert!(format!("{err:#}").contains("unsupported pickle opcode"), "{err:#}");
    }

    #[test]
    fn rejects_views_past_the_storage_end() {
        let mut out = header();
        let p = Pickle::new().op(b"ccollections\nOrderedDict\n)R(");
        let p = entry(p, "w", ("FloatStorage", "k0", 2), 1, &[2], &[1]);
        out.extend(p.op(b"u").stop());
        out.extend(Pickle::new().op(b"](").str("k0").op(b"e").stop());
        out.extend(2u64.to_le_bytes());
        out.extend([0u8; 8]);
        let err = read_state_dict(&out).unwrap_err();
        assert!(format!("{err:#}").contains("reaches past its storage"), "{err:#}");
    }
}
