// cbr on the device: what `cbr classify` does to an image, in the browser, with
// onnxruntime-web (its WebAssembly CPU backend). One module, used by the web app's
// "run on this device" mode and by the page `cbr export-web` writes, so both answer
// as the CLI does:
//   - decoding: the browser's decoder, EXIF orientation applied ("from-image"), no
//     colour-profile conversion (cbr ignores ICC profiles), alpha dropped;
//   - resizing: an exact port of cbr's resize (fast_image_resize's bilinear
//     convolution on 8-bit RGB, src/decode.rs), integer arithmetic included, because
//     a canvas resize is a different filter and moves scores by more than 1e-3;
//   - normalising: (pixel - mean) / std in float32, layout and channel order from the
//     model's metadata (meta::ClassifierInfo, written beside the model as JSON);
//   - the answer: src/classifier.rs's predict_row (the unknown entry, then the top-score
//     threshold), as `cbr classify --json` prints it.

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

export class DeviceClassifier {
  /// `info`: the model's metadata (ClassifierInfo); `modelBytes`: the ONNX file.
  static async create(ort, modelBytes, info) {
    if (info.index) {
      throw new Error("this model keeps its index in a file beside it (a sidecar); the browser runs single-file models only");
    }
    const session = await ort.InferenceSession.create(new Uint8Array(modelBytes), {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
    });
    return new DeviceClassifier(ort, session, info);
  }

  constructor(ort, session, info) {
    this.ort = ort;
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
    const rgb = resizeRgb(rgbaToRgb(rgba, width, height), width, height, p.width, p.height, p.resize, p.resample);
    const tensor = toTensor(rgb, p);
    const dims = p.layout === "nhwc" ? [1, p.height, p.width, 3] : [1, 3, p.height, p.width];
    const out = await this.session.run({ [this.input]: new this.ort.Tensor("float32", tensor, dims) }, ["scores"]);
    const scores = out.scores.data;
    return predict(this.info, scores, k, threshold);
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

function rgbaToRgb(rgba, width, height) {
  const n = width * height;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    rgb[3 * i] = rgba[4 * i];
    rgb[3 * i + 1] = rgba[4 * i + 1];
    rgb[3 * i + 2] = rgba[4 * i + 2];
  }
  return rgb;
}

// ---- cbr's resize: fast_image_resize 6's Convolution(Bilinear) on U8x3 ----

function bilinear(x) {
  x = Math.abs(x);
  return x < 1 ? 1 - x : 0;
}

/// precompute_coefficients: one chunk (first source index, weights) per output pixel,
/// the triangle filter widened by the scale when shrinking (antialiasing).
function coefficients(inSize, in0, in1, outSize) {
  const scale = (in1 - in0) / outSize;
  const filterScale = Math.max(scale, 1);
  const radius = 1.0 * filterScale;
  const recip = 1 / filterScale;
  const chunks = [];
  for (let out = 0; out < outSize; out++) {
    const inCenter = in0 + (out + 0.5) * scale;
    const xMin = Math.max(Math.floor(inCenter - radius), 0);
    const xMax = Math.min(Math.ceil(inCenter + radius), inSize);
    const center = inCenter - 0.5;
    const ws = [];
    let start = xMin;
    let ww = 0;
    for (let x = xMin; x < xMax; x++) {
      const w = bilinear((x - center) * recip);
      if (x === start && w === 0) {
        start++;
      } else {
        ws.push(w);
        ww += w;
      }
    }
    let end = xMax;
    for (let i = ws.length - 1; i >= 0; i--) {
      if (end <= start || ws[i] !== 0) break;
      end--;
    }
    if (ww !== 0) for (let i = 0; i < ws.length; i++) ws[i] /= ww;
    chunks.push({ start, values: ws.slice(0, end - start) });
  }
  return chunks;
}

/// Normalizer16: the weights as i16 fixed point with the largest precision that keeps
/// the biggest weight below 2^15.
function fixedPoint(chunks) {
  let max = 0;
  for (const c of chunks) for (const v of c.values) if (v > max) max = v;
  let precision = 0;
  for (let p = 0; p < 22; p++) {
    precision = p;
    if (roundHalfAway(max * 2 ** (p + 1)) >= 1 << 15) break;
  }
  const scale = 2 ** precision;
  return {
    precision,
    chunks: chunks.map((c) => ({ start: c.start, values: Int16Array.from(c.values, (v) => roundHalfAway(v * scale)) })),
  };
}

// Rust's f64::round: halves away from zero.
function roundHalfAway(v) {
  return v < 0 ? -Math.round(-v) : Math.round(v);
}

function clip8(sum, precision) {
  const v = sum >> precision;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/// Vertical pass over columns [x0, x0 + width) of `src` (RGB, srcWidth wide).
function vertical(src, srcWidth, x0, width, fx) {
  const { precision, chunks } = fx;
  const initial = 1 << (precision - 1);
  const out = new Uint8Array(width * chunks.length * 3);
  const rowLen = width * 3;
  for (let y = 0; y < chunks.length; y++) {
    const { start, values } = chunks[y];
    for (let i = 0; i < rowLen; i++) {
      let s = initial;
      for (let j = 0; j < values.length; j++) s += src[((start + j) * srcWidth + x0) * 3 + i] * values[j];
      out[y * rowLen + i] = clip8(s, precision);
    }
  }
  return out;
}

/// Horizontal pass over rows [y0, y0 + height) of `src` (RGB, srcWidth wide); chunk
/// starts are relative to column `x0`.
function horizontal(src, srcWidth, y0, height, fx) {
  const { precision, chunks } = fx;
  const initial = 1 << (precision - 1);
  const w = chunks.length;
  const out = new Uint8Array(w * height * 3);
  for (let y = 0; y < height; y++) {
    const row = (y0 + y) * srcWidth;
    for (let x = 0; x < w; x++) {
      const { start, values } = chunks[x];
      let r = initial, g = initial, b = initial;
      for (let j = 0; j < values.length; j++) {
        const k = values[j];
        const o = (row + start + j) * 3;
        r += src[o] * k;
        g += src[o + 1] * k;
        b += src[o + 2] * k;
      }
      const d = (y * w + x) * 3;
      out[d] = clip8(r, precision);
      out[d + 1] = clip8(g, precision);
      out[d + 2] = clip8(b, precision);
    }
  }
  return out;
}

/// CropBox::fit_src_into_dst_size, centred: the largest centred box of the output's aspect ratio.
function centreCrop(sw, sh, dw, dh) {
  const ratio = sw / sh;
  const want = dw / dh;
  let cw = sw, ch = sh;
  if (Math.abs(ratio - want) < Number.EPSILON) {
    // already the output's aspect ratio
  } else if (ratio >= want) {
    cw = want * sh;
  } else {
    ch = sw / want;
  }
  return { left: (sw - cw) * 0.5, top: (sh - ch) * 0.5, width: cw, height: ch };
}

/// `rgb` (sw x sh) resized to dw x dh as cbr does (`mode`: "stretch" or "center-crop";
/// `resample`: "antialiased", the default, or "mediapipe").
export function resizeRgb(rgb, sw, sh, dw, dh, mode, resample = "antialiased") {
  if (sw === dw && sh === dh) return rgb.slice(); // both modes leave a same-sized image as is
  if (resample === "mediapipe") return sampleLikeOpencv(rgb, sw, sh, sourceBox(sw, sh, dw, dh, mode), dw, dh);
  if (resample !== "antialiased") throw new Error(`unknown resample ${resample} in the model's metadata`);
  const crop = mode === "center-crop" ? centreCrop(sw, sh, dw, dh) : { left: 0, top: 0, width: sw, height: sh };
  const needH = dw !== crop.width || crop.left !== Math.round(crop.left);
  const needV = dh !== crop.height || crop.top !== Math.round(crop.top);
  if (!needH && !needV) {
    // The crop is the output: copied as is.
    const out = new Uint8Array(dw * dh * 3);
    for (let y = 0; y < dh; y++) {
      const from = ((crop.top + y) * sw + crop.left) * 3;
      out.set(rgb.subarray(from, from + dw * 3), y * dw * 3);
    }
    return out;
  }
  const h = needH ? fixedPoint(coefficients(sw, crop.left, crop.left + crop.width, dw)) : null;
  const v = needV ? fixedPoint(coefficients(sh, crop.top, crop.top + crop.height, dh)) : null;
  if (h && v) {
    // 8-bit images: the vertical pass first, over the columns the horizontal pass reads.
    const first = h.chunks[0].start;
    const last = h.chunks[h.chunks.length - 1];
    const width = last.start + last.values.length - first;
    const temp = vertical(rgb, sw, first, width, v);
    const shifted = { precision: h.precision, chunks: h.chunks.map((c) => ({ start: c.start - first, values: c.values })) };
    return horizontal(temp, width, 0, dh, shifted);
  }
  if (h) return horizontal(rgb, sw, crop.top, dh, h);
  return vertical(rgb, sw, crop.left, dw, v);
}

// ---- Resample::Mediapipe: decode.rs's sample_bilinear_like_opencv ----

/// The part of the image the input shows: all of it, or the centred box of its aspect ratio.
function sourceBox(w, h, dw, dh, mode) {
  if (mode !== "center-crop") return [0, 0, w, h];
  const aspect = dw / dh;
  if (w / h > aspect) {
    const bw = h * aspect;
    return [(w - bw) / 2, 0, bw, h];
  }
  const bh = w / aspect;
  return [0, (h - bh) / 2, w, bh];
}

// OpenCV's cvRound: halves to even.
function roundTiesEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r;
}

/// MediaPipe's CPU resize: corner-aligned bilinear sampling (no antialiasing), positions in
/// 1/32 pixel, weights in fixed point, replicated border.
function sampleLikeOpencv(rgb, sw, sh, [left, top, bw, bh], dw, dh) {
  const positions = (n, start, span) => {
    const step = span / n;
    return Array.from({ length: n }, (_, i) => {
      const fixed = roundTiesEven((start + i * step) * 32);
      return [Math.floor(fixed / 32), fixed & 31];
    });
  };
  const xs = positions(dw, left, bw);
  const ys = positions(dh, top, bh);
  const cx = (x) => Math.min(Math.max(x, 0), sw - 1);
  const cy = (y) => Math.min(Math.max(y, 0), sh - 1);
  const out = new Uint8Array(dw * dh * 3);
  for (let oy = 0; oy < dh; oy++) {
    const [iy, fy] = ys[oy];
    const r0 = cy(iy) * sw * 3, r1 = cy(iy + 1) * sw * 3;
    for (let ox = 0; ox < dw; ox++) {
      const [ix, fx] = xs[ox];
      const c0 = cx(ix) * 3, c1 = cx(ix + 1) * 3;
      const w0 = (32 - fy) * (32 - fx), w1 = (32 - fy) * fx, w2 = fy * (32 - fx), w3 = fy * fx;
      const o = (oy * dw + ox) * 3;
      for (let c = 0; c < 3; c++) {
        const v = w0 * rgb[r0 + c0 + c] + w1 * rgb[r0 + c1 + c] + w2 * rgb[r1 + c0 + c] + w3 * rgb[r1 + c1 + c];
        out[o + c] = Math.min(Math.max((v + 512) >> 10, 0), 255);
      }
    }
  }
  return out;
}

/// The input tensor: (pixel - mean[c]) / std[c] in float32, in the model's layout and
/// channel order.
export function toTensor(rgb, p) {
  const n = p.width * p.height;
  const out = new Float32Array(3 * n);
  const f = Math.fround;
  const order = p.channel_order === "bgr" ? [2, 1, 0] : [0, 1, 2];
  for (let c = 0; c < 3; c++) {
    const src = order[c];
    const mean = f(p.mean[src]);
    const std = f(p.std[src]);
    const lut = new Float32Array(256);
    for (let v = 0; v < 256; v++) lut[v] = f(f(v - mean) / std);
    for (let i = 0; i < n; i++) {
      const value = lut[rgb[3 * i + src]];
      if (p.layout === "nhwc") out[3 * i + c] = value;
      else out[c * n + i] = value;
    }
  }
  return out;
}

// ---- the answer: src/classifier.rs predict_row with the model's own decision ----

/// `scores` (one per class, then the unknown entry when the model has one) to the answer
/// `cbr classify --json` prints: the best class, unless the unknown entry scores higher
/// than it or it scores below the model's threshold. A caller's `threshold` replaces the
/// model's decision (Classifier::predict): unknown exactly when the best class is below it.
export function predict(info, scores, k = 3, callerThreshold = null) {
  const classes = info.labels.length;
  const known = Array.from(scores.slice(0, classes));
  const unknownScore = scores.length > classes ? scores[classes] : null;
  const order = known.map((_, i) => i).filter((i) => known[i] > -Infinity);
  order.sort((a, b) => known[b] - known[a] || a - b);
  const top = order.slice(0, Math.max(k, 1)).map((i) => ({ label: info.labels[i], score: known[i] }));
  let label = null;
  if (top.length > 0) {
    const best = top[0];
    const own = callerThreshold === null;
    const threshold = own ? info.threshold ?? null : callerThreshold;
    if (own && unknownScore !== null && unknownScore > best.score) label = null;
    else if (threshold !== null && best.score < threshold) label = null;
    else label = best.label;
  }
  return { label, unknown: label === null, top: top.slice(0, k), unknown_score: unknownScore };
}
