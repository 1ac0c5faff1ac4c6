// cbr-core in JavaScript: the WebAssembly module (crates/cbr-wasm) and its API, for browsers
// and Node. Every call is one request to the module: a JSON object and binary blobs, framed as
// crates/cbr-wasm/src/frame.rs says (u32 little-endian lengths), answered the same way. The
// module does the work; this file only packs and unpacks.

/// A failed call: `kind` is cbr's error kind ("bad input", "not found", "conflict",
/// "too large", "unsupported", "internal").
export class CbrError extends Error {
  constructor(message, kind) {
    super(message);
    this.name = "CbrError";
    this.kind = kind;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function frame(json, blobs) {
  const text = encoder.encode(JSON.stringify(json));
  const parts = blobs.map((b) => (b instanceof Uint8Array ? b : new Uint8Array(b.buffer, b.byteOffset, b.byteLength)));
  const size = 8 + text.length + parts.reduce((n, b) => n + 4 + b.length, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  view.setUint32(at, text.length, true);
  out.set(text, (at += 4));
  view.setUint32((at += text.length), parts.length, true);
  at += 4;
  for (const b of parts) {
    view.setUint32(at, b.length, true);
    out.set(b, (at += 4));
    at += b.length;
  }
  return out;
}

function unframe(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const n = view.getUint32(at, true);
  const json = JSON.parse(decoder.decode(bytes.subarray((at += 4), (at += n))));
  const count = view.getUint32(at, true);
  at += 4;
  const blobs = [];
  for (let i = 0; i < count; i++) {
    const len = view.getUint32(at, true);
    blobs.push(bytes.slice((at += 4), (at += len)));
  }
  return { json, blobs };
}

/// Little-endian f32 bytes as a Float32Array (a copy, aligned).
function f32(bytes) {
  const out = new Float32Array(bytes.length / 4);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

export class Core {
  constructor(instance) {
    this.exports = instance.exports;
  }

  /// One call: `op` with its arguments (JSON) and blobs; returns { json, blobs } or throws CbrError.
  call(op, args, blobs = []) {
    const request = frame({ op, ...args }, blobs);
    const e = this.exports;
    const at = e.cbr_input(request.length);
    new Uint8Array(e.memory.buffer, at, request.length).set(request);
    const status = e.cbr_call();
    const response = new Uint8Array(e.memory.buffer, e.cbr_output(), e.cbr_output_len()).slice();
    const out = unframe(response);
    if (status !== 0) throw new CbrError(out.json.error, out.json.kind);
    return out;
  }

  version() {
    return this.call("version", {}).json.version;
  }

  /// The build options and their defaults (cbr build's, the Rust BuildRequest).
  defaults() {
    return this.call("defaults", {}).json;
  }

  /// What a model file says about itself: { format, info, operations }.
  info(model) {
    return this.call("info", {}, [model]).json;
  }

  /// A classifier from embeddings, as `cbr build --embeddings` writes it: `embedder` is the
  /// embedder file's bytes, `embedderInfo`/`preprocess` what the embeddings were made with
  /// (cbr's EmbedderInfo and Preprocess), `embeddings` a Float32Array of labels.length rows,
  /// `imageIds` 32 hex digits per row (rows of one image share it), `request` the build options
  /// (cbr build's names, e.g. { aggregate: "max" }). Returns { model: Uint8Array, report }.
  build({ embedder, embedderInfo, preprocess, labels, imageIds, embeddings, request = {} }) {
    const args = { embedder: embedderInfo, preprocess, request, labels, image_ids: imageIds };
    const { json, blobs } = this.call("build", args, [embedder, embeddings]);
    return { model: blobs[0], report: json };
  }

  /// `cbr add` on a model's bytes, with the new images' embeddings (made by the model's
  /// embedder). Returns { model, report }.
  add(model, { labels, imageIds, embeddings }) {
    const { json, blobs } = this.call("add", { labels, image_ids: imageIds }, [model, embeddings]);
    return { model: blobs[0], report: json };
  }

  /// `cbr remove`: the model without these classes.
  remove(model, labels) {
    const { json, blobs } = this.call("remove", { labels }, [model]);
    return { model: blobs[0], report: json };
  }

  /// `cbr relabel`: class `from` renamed `to` (merged into it if it exists).
  relabel(model, from, to) {
    const { json, blobs } = this.call("relabel", { from, to }, [model]);
    return { model: blobs[0], report: json };
  }

  /// RGBA pixels (a canvas's ImageData.data) into the embedder's input tensor, resized and
  /// normalised as `preprocess` (the model's) says: cbr's one pixel path.
  pixels(rgba, width, height, preprocess) {
    return f32(this.call("pixels", { width, height, preprocess }, [rgba]).blobs[0]);
  }

  /// One row of a model's `scores` into the answer `cbr classify --json` prints:
  /// { label, unknown, top: [{label, score}], unknown_score }. `threshold` replaces the
  /// model's own decision.
  answer(info, scores, k = 3, threshold = null) {
    const s = scores instanceof Float32Array ? scores : Float32Array.from(scores);
    return this.call("answer", { info, k, threshold }, [s]).json;
  }
}

/// Loads the module: `source` is its bytes (ArrayBuffer, Uint8Array), a URL to fetch, or a
/// compiled WebAssembly.Module.
export async function loadCore(source) {
  let module = source;
  if (!(source instanceof WebAssembly.Module)) {
    let bytes = source;
    if (typeof source === "string" || source instanceof URL) {
      const response = await fetch(source);
      if (!response.ok) throw new CbrError(`cannot load ${source}: HTTP ${response.status}`, "not found");
      bytes = await response.arrayBuffer();
    }
    module = await WebAssembly.compile(bytes);
  }
  const instance = await WebAssembly.instantiate(module, {});
  return new Core(instance);
}
