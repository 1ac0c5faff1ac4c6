// cbr on the device: what `cbr classify` does to an image, in the browser, with
// onnxruntime-web (its WebAssembly CPU backend) and cbr-core compiled to WebAssembly
// (cbr-core.mjs, cbr_core.wasm). One module, used by the web app's "run on this device" mode
// and by the page `cbr export-web` writes, so both answer as the CLI does:
//   - decoding: the browser's decoder, EXIF orientation applied ("from-image"), no
//     colour-profile conversion (cbr ignores ICC profiles), alpha dropped;
//   - resizing and normalising: cbr's own pixel path (cbr_core::pixels, the core's `pixels`
//     operation), from the model's metadata;
//   - the answer: cbr_core::predict::answer (the core's `answer` operation), as
//     `cbr classify --json` prints it.

import { loadCore } from "./cbr-core.mjs";

/// Loads onnxruntime-web from `base` (a URL ending in "/", holding ort.wasm.min.mjs and
/// the ort-wasm-simd-threaded files). `threads`: 0 picks what the page allows (threads
/// need cross-origin isolation); 1 forces one thread.
export async function loadOrt(base, threads = 0) {
  const url = new URL(base, document.baseURI).href;
  const ort = await import(url + "ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = url;
  const cores = navigator.hardwareConcurrency || 1;
  ort.env.wasm.numThreads = threads > 0 ? threads : (self.crossOriginIsolated ? Math.min(cores, 4) : 1);
  // No proxy worker: the page waits for each answer anyway.
  ort.env.wasm.proxy = false;
  return ort;
}

/// The number of threads the runtime will use (1 without cross-origin isolation).
export function ortThreads(ort) {
  return self.crossOriginIsolated ? ort.env.wasm.numThreads : 1;
}

/// cbr-core as WebAssembly, from `cbr_core.wasm` beside this module.
export function loadCbrCore() {
  return loadCore(new URL("cbr_core.wasm", import.meta.url));
}

export class DeviceClassifier {
  /// `info`: the model's metadata (ClassifierInfo); `modelBytes`: the ONNX file; `core`:
  /// cbr-core (loadCbrCore).
  static async create(ort, modelBytes, info, core) {
    if (info.index) {
      throw new Error("this model keeps its index in a file beside it (a sidecar); the browser runs single-file models only");
    }
    const session = await ort.InferenceSession.create(new Uint8Array(modelBytes), {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
    });
    return new DeviceClassifier(ort, session, info, core);
  }

  constructor(ort, session, info, core) {
    this.ort = ort;
    this.core = core;
    this.session = session;
    this.info = info;
    this.input = info.embedder.input;
  }

  /// Classifies an image file (Blob): decode, then classifyRgba.
  async classifyBlob(blob, k = 3, threshold = null) {
    const { data, width, height } = await decodeImage(blob);
    return this.classifyRgba(data, width, height, k, threshold);
  }

  /// Classifies RGBA pixels (a canvas's ImageData.data): the answer object of
  /// `cbr classify --json` ({label, unknown, top: [{label, score}], unknown_score}).
  /// `threshold` (as `cbr classify --threshold`) replaces the model's own decision.
  async classifyRgba(rgba, width, height, k = 3, threshold = null) {
    const p = this.info.preprocess;
    const tensor = this.core.pixels(rgba, width, height, p);
    const out = await this.session.run({ [this.input]: new this.ort.Tensor("float32", tensor, inputDims(p)) }, ["scores"]);
    return this.core.answer(this.info, out.scores.data, k, threshold);
  }
}

/// Decodes an image file to RGBA at its own size, EXIF orientation applied.
export async function decodeImage(blob) {
  const bitmap = await createImageBitmap(blob, {
    imageOrientation: "from-image",
    premultiplyAlpha: "none",
    colorSpaceConversion: "none",
  });
  try {
    return pixelsOf(bitmap, bitmap.width, bitmap.height);
  } finally {
    bitmap.close();
  }
}

/// The RGBA pixels of anything a canvas can draw (an ImageBitmap, a playing <video>),
/// at `width` x `height` (its own size: the resize is ours, not the canvas's).
export function pixelsOf(source, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(source, 0, 0);
  return { data: ctx.getImageData(0, 0, width, height).data, width, height };
}

/// The embedder's input shape for one image.
export function inputDims(p) {
  return p.layout === "nhwc" ? [1, p.height, p.width, 3] : [1, 3, p.height, p.width];
}
