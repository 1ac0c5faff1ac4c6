// The exported page (`cbr export-web`): builds a classifier on the device and classifies with
// it. The browser decodes photos; cbr's core (WebAssembly) turns pixels into the embedder's
// input; onnxruntime-web runs the embedder; the core computes the head and writes the model
// file (build, add, remove, relabel: the same Rust code as `cbr build`/`add`/`remove`). The
// model file is the state, kept in IndexedDB; each photo's embedding is kept there too, so a
// photo is embedded once.
//
// Automation hooks (the contract the tests use), answers as JSON in the text of #result:
//   ?build=MANIFEST  builds from a CSV (path,label; paths relative to the manifest) and keeps
//                    the model: {classes, images, sha256, build_ms, embed_ms, head_ms, skipped}
//   ?image=URL       classifies that image with the kept model: {label, unknown, top}
//   ?threads=N       the runtime's threads (default: what the page allows; threads need
//                    cross-origin isolation).
import { loadOrt, ortThreads, DeviceClassifier, decodeImage, pixelsOf, loadCbrCore, inputDims } from "./cbr-device.js";

const $ = (s) => document.querySelector(s);
const params = new URLSearchParams(location.search);

// The largest photo decoded at its own size; larger ones are decoded at reduced size by the
// browser (a 12-megapixel photo would need ~50 MB of RGBA, twice, in the page).
const MAX_PIXELS = 16e6;

const page = {
  core: null, ort: null, embedder: null, // { session, info, preprocess, bytes }
  model: null, info: null, classifier: null,
  pending: [], // new classes: { name, photos: [{ name, blob, url }] }
};

function status(text, error = false) {
  $("#status").textContent = text;
  $("#status").classList.toggle("error", error);
}

function message(e) {
  return e?.message || String(e);
}

// ---- storage: IndexedDB, one database; the model file under "model:<embedder sha>" ----

function openDb() {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open("cbr-device", 1);
    r.onupgradeneeded = () => {
      r.result.createObjectStore("models");
      r.result.createObjectStore("embeddings");
    };
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

async function dbDo(store, mode, fn) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(store, mode);
      const r = fn(tx.objectStore(store));
      tx.oncomplete = () => resolve(r?.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new Error("the transaction was aborted"));
    });
  } finally {
    db.close();
  }
}

const modelKey = () => `model:${page.embedder.info.sha256}`;
const loadStored = () => dbDo("models", "readonly", (s) => s.get(modelKey()));
const storeModel = (bytes) => dbDo("models", "readwrite", (s) => s.put(bytes, modelKey()));
const getEmbedding = (id) => dbDo("embeddings", "readonly", (s) => s.get(`${page.embedder.info.sha256}:${id}`));
const putEmbedding = (id, e) => dbDo("embeddings", "readwrite", (s) => s.put(e, `${page.embedder.info.sha256}:${id}`));

// ---- photos to embeddings ----

async function sha256Hex(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/// cbr's image id (ImageId::of_bytes): the first 16 bytes of the file's SHA-256, in hex.
async function imageId(bytes) {
  return (await sha256Hex(bytes)).slice(0, 32);
}

/// Decodes a photo: at its own size, or at reduced size when it has more than MAX_PIXELS.
async function decodePhoto(blob) {
  const probe = await createImageBitmap(blob, { imageOrientation: "from-image" });
  const { width, height } = probe;
  probe.close();
  if (width * height <= MAX_PIXELS) return decodeImage(blob);
  const scale = Math.sqrt(MAX_PIXELS / (width * height));
  const w = Math.max(1, Math.floor(width * scale));
  const h = Math.max(1, Math.floor(height * scale));
  const bitmap = await createImageBitmap(blob, {
    imageOrientation: "from-image", premultiplyAlpha: "none", colorSpaceConversion: "none",
    resizeWidth: w, resizeHeight: h, resizeQuality: "high",
  });
  try {
    return pixelsOf(bitmap, w, h);
  } finally {
    bitmap.close();
  }
}

/// The embedding of RGBA pixels: cbr's pixel path (the core), then the embedder.
async function embedRgba(rgba, width, height) {
  const { session, info, preprocess } = page.embedder;
  const tensor = page.core.pixels(rgba, width, height, preprocess);
  const out = await session.run({ [info.input]: new page.ort.Tensor("float32", tensor, inputDims(preprocess)) }, [info.output]);
  const e = Float32Array.from(out[info.output].data);
  if (e.length !== info.dim) throw new Error(`the embedder gave ${e.length} values, not ${info.dim}`);
  return e;
}

/// A photo's id and embedding, from storage when it was embedded before.
async function embedPhoto(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  const id = await imageId(bytes);
  const kept = await getEmbedding(id).catch(() => null);
  if (kept) return { id, embedding: kept, cached: true };
  let pixels;
  try {
    pixels = await decodePhoto(blob);
  } catch (e) {
    throw new Error(`cannot decode it as an image (${message(e)})`);
  }
  const embedding = await embedRgba(pixels.data, pixels.width, pixels.height);
  await putEmbedding(id, embedding).catch(() => {}); // a cache: storage refused costs time only
  return { id, embedding, cached: false };
}

// ---- the model ----

async function useModel(bytes) {
  page.model = bytes;
  if (!bytes) {
    page.info = null;
    page.classifier = null;
  } else {
    page.info = page.core.info(bytes).info;
    page.classifier = await DeviceClassifier.create(page.ort, bytes, page.info, page.core);
  }
  window.cbrPage.classifier = page.classifier;
  render();
}

/// Keeps `bytes` as the model (storage first: if it is refused, the previous model stays).
async function keepModel(bytes) {
  try {
    await storeModel(bytes);
  } catch (e) {
    throw new Error(`storage refused the model (${message(e)}); the previous model is kept`);
  }
  await useModel(bytes);
}

/// Embeds `photos` ({ blob, name, label }) and writes the model: a new one from all of them when
/// `base` is null, else `base` with their rows added. Undecodable photos are named and skipped.
async function build(photos, base, progress = () => {}) {
  const t0 = performance.now();
  const labels = [], imageIds = [], rows = [], skipped = [];
  let done = 0;
  for (const p of photos) {
    try {
      const { id, embedding } = await embedPhoto(p.blob);
      labels.push(p.label);
      imageIds.push(id);
      rows.push(embedding);
    } catch (e) {
      skipped.push({ name: p.name, error: message(e) });
    }
    progress(++done, photos.length);
    await new Promise((r) => setTimeout(r, 0)); // let the page paint the progress
  }
  const t1 = performance.now();
  for (const l of new Set(photos.map((p) => p.label))) {
    if (!labels.includes(l)) throw new Error(`class "${l}" has no usable photo: add photos to it or remove it`);
  }
  const embeddings = new Float32Array(rows.length * page.embedder.info.dim);
  rows.forEach((r, i) => embeddings.set(r, i * page.embedder.info.dim));
  const { model } = base
    ? page.core.add(base, { labels, imageIds, embeddings })
    : page.core.build({
      embedder: page.embedder.bytes, embedderInfo: page.embedder.info, preprocess: page.embedder.preprocess,
      labels, imageIds, embeddings,
    });
  const t2 = performance.now();
  await keepModel(model);
  const t3 = performance.now();
  const info = page.info;
  return {
    classes: info.labels.length,
    images: info.images_per_label.reduce((a, b) => a + b, 0),
    sha256: await sha256Hex(model),
    build_ms: t3 - t0, embed_ms: t1 - t0, head_ms: t2 - t1,
    embedded: rows.length, skipped,
  };
}

/// `?build=MANIFEST`: a CSV of path,label (a header row is skipped), paths relative to it.
async function buildFromManifest(url) {
  const base = new URL(url, location.href);
  const r = await fetch(base);
  if (!r.ok) throw new Error(`cannot fetch ${url}: HTTP ${r.status}`);
  const lines = (await r.text()).split(/\r?\n/).filter((l) => l.trim());
  const photos = [];
  lines.forEach((line, i) => {
    const at = line.lastIndexOf(",");
    const [path, label] = [line.slice(0, at).trim(), line.slice(at + 1).trim()];
    if (i === 0 && path === "path" && label === "label") return;
    if (at < 0 || !path || !label) throw new Error(`${url} line ${i + 1}: not path,label`);
    photos.push({ path, label, name: path });
  });
  for (const p of photos) {
    const res = await fetch(new URL(p.path, base));
    if (!res.ok) throw new Error(`cannot fetch ${p.path}: HTTP ${res.status}`);
    p.blob = await res.blob();
  }
  return build(photos, null, progressBar);
}

function progressBar(done, total) {
  const bar = $("#progress");
  bar.hidden = false;
  bar.max = total;
  bar.value = done;
  $("#build-status").textContent = `embedded ${done} / ${total} photos`;
}

// ---- the page ----

function button(text, onclick) {
  const b = document.createElement("button");
  b.textContent = text;
  b.addEventListener("click", onclick);
  return b;
}

function render() {
  const list = $("#class-list");
  list.replaceChildren();
  const labels = page.info?.labels || [];
  labels.forEach((label, i) => {
    const li = document.createElement("li");
    const head = document.createElement("div");
    head.className = "head";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${label} (${page.info.images_per_label[i]} photos, built)`;
    head.append(name,
      button("Rename", () => edit(() => {
        const to = prompt(`Rename ${label} to`, label);
        return to && to !== label ? page.core.relabel(page.model, label, to).model : null;
      })),
      button("Delete", () => edit(() => page.core.remove(page.model, [label]).model)));
    li.append(head);
    list.append(li);
  });
  page.pending.forEach((c) => {
    const li = document.createElement("li");
    li.dataset.pending = c.name;
    const head = document.createElement("div");
    head.className = "head";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${c.name} (${c.photos.length} photos, new)`;
    head.append(name,
      button("Rename", () => {
        const to = prompt(`Rename ${c.name} to`, c.name);
        if (to) c.name = to.trim();
        render();
      }),
      button("Delete", () => {
        page.pending = page.pending.filter((p) => p !== c);
        render();
      }));
    const thumbs = document.createElement("div");
    thumbs.className = "thumbs";
    c.photos.forEach((p) => {
      const t = document.createElement("div");
      t.className = "thumb";
      const img = document.createElement("img");
      img.src = p.url;
      img.alt = p.name;
      t.append(img, button("×", () => {
        c.photos = c.photos.filter((q) => q !== p);
        URL.revokeObjectURL(p.url);
        render();
      }));
      thumbs.append(t);
    });
    li.append(head, thumbs);
    list.append(li);
  });
  $("#classes").textContent = labels.join(", ") || "none yet";
  const dl = $("#download");
  if (dl.href.startsWith("blob:")) URL.revokeObjectURL(dl.href);
  dl.hidden = !page.model;
  if (page.model) dl.href = URL.createObjectURL(new Blob([page.model], { type: "application/octet-stream" }));
  $("#build").disabled = page.pending.length === 0;
}

async function edit(fn) {
  try {
    const bytes = fn();
    if (bytes) await keepModel(bytes);
    status(`Ready: ${page.info.labels.length} classes.`);
  } catch (e) {
    status(message(e), true);
  }
}

function pendingClass() {
  const name = $("#class-name").value.trim();
  if (!name) throw new Error("give the class a name first");
  let c = page.pending.find((p) => p.name === name);
  if (!c) page.pending.push((c = { name, photos: [] }));
  return c;
}

function addPhotos(files) {
  try {
    const c = pendingClass();
    for (const f of files) c.photos.push({ name: f.name || `frame ${c.photos.length + 1}.png`, blob: f, url: URL.createObjectURL(f) });
    render();
  } catch (e) {
    status(message(e), true);
  }
}

async function buildPending() {
  $("#errors").replaceChildren();
  const empty = page.pending.find((c) => c.photos.length === 0);
  if (empty) return status(`class "${empty.name}" has no photos: add some or delete it`, true);
  // New photos of a class the model has are added to it (as `cbr add`).
  const photos = page.pending.flatMap((c) => c.photos.map((p) => ({ ...p, label: c.name })));
  status("Building …");
  $("#build").disabled = true;
  try {
    const r = await build(photos, page.model, progressBar);
    page.pending = [];
    for (const s of r.skipped) {
      const li = document.createElement("li");
      li.textContent = `${s.name} skipped: ${s.error}`;
      $("#errors").append(li);
    }
    $("#build-status").textContent = `${r.classes} classes, ${r.images} photos, built in ${(r.build_ms / 1000).toFixed(1)} s`;
    status(`Ready: ${r.classes} classes.`);
    render();
  } catch (e) {
    status(message(e), true);
    render();
  }
}

function show(answer) {
  const label = $("#label");
  label.textContent = answer.unknown ? "unknown" : answer.label;
  label.classList.toggle("unknown", answer.unknown);
  const bars = $("#bars");
  bars.replaceChildren();
  answer.top.forEach((t, i) => {
    const bar = document.createElement("div");
    bar.className = i === 0 ? "bar first" : "bar";
    const name = document.createElement("div");
    name.className = "name";
    const l = document.createElement("span");
    l.textContent = t.label;
    const s = document.createElement("span");
    s.textContent = (100 * t.score).toFixed(1) + "%";
    name.append(l, s);
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = Math.max(0, Math.min(100, 100 * t.score)) + "%";
    track.append(fill);
    bar.append(name, track);
    bars.append(bar);
  });
  $("#result").textContent = JSON.stringify({ label: answer.label, unknown: answer.unknown, top: answer.top });
}

function classifier() {
  if (!page.classifier) throw new Error("no classes yet: add classes and build first");
  return page.classifier;
}

async function classifyFile(blob) {
  const c = classifier();
  const img = $("#preview");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  img.hidden = false;
  $("#video").hidden = true;
  const t0 = performance.now();
  const { data, width, height } = await decodePhoto(blob);
  const answer = await c.classifyRgba(data, width, height);
  show(answer);
  $("#fps").textContent = `${(performance.now() - t0).toFixed(0)} ms`;
  return answer;
}

async function startStream(video) {
  if (video.srcObject) {
    video.srcObject.getTracks().forEach((t) => t.stop());
    video.srcObject = null;
    video.hidden = true;
    return false;
  }
  video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  video.hidden = false;
  await video.play();
  return true;
}

async function camera() {
  classifier();
  const video = $("#video");
  if (!(await startStream(video))) return;
  $("#preview").hidden = true;
  let frames = 0;
  let since = performance.now();
  while (video.srcObject) {
    const { data, width, height } = pixelsOf(video, video.videoWidth, video.videoHeight);
    show(await page.classifier.classifyRgba(data, width, height));
    frames++;
    const now = performance.now();
    if (now - since >= 1000) {
      $("#fps").textContent = `${((1000 * frames) / (now - since)).toFixed(1)} fps`;
      frames = 0;
      since = now;
    }
    // Back to the event loop between frames: the page paints and takes the stopping click.
    await new Promise((r) => setTimeout(r, 0));
  }
}

/// The live camera for a new class: the first tap starts it, each next tap adds a frame.
async function frameForClass() {
  pendingClass();
  const video = $("#class-video");
  if (!video.srcObject) {
    await startStream(video);
    $("#class-frame").textContent = "Add this frame";
    return;
  }
  const canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight);
  canvas.getContext("2d").drawImage(video, 0, 0);
  addPhotos([await canvas.convertToBlob({ type: "image/png" })]);
}

async function start() {
  if ("serviceWorker" in navigator) {
    // Offline use: the worker keeps every file of the site (see sw.js).
    navigator.serviceWorker.register("sw.js").catch((e) => console.warn("no offline copy:", e));
  }
  const [core, ort, described, embedderBytes] = await Promise.all([
    loadCbrCore(),
    loadOrt("ort/", Number(params.get("threads") || 0)),
    fetch("embedder.json").then((r) => r.json()),
    fetch("embedder.onnx").then((r) => r.arrayBuffer()),
  ]);
  const session = await ort.InferenceSession.create(new Uint8Array(embedderBytes), {
    executionProviders: ["wasm"], graphOptimizationLevel: "all",
  });
  Object.assign(page, { core, ort });
  page.embedder = { session, bytes: new Uint8Array(embedderBytes), info: described.embedder, preprocess: described.preprocess };
  const threads = ortThreads(ort);
  window.cbrPage = {
    core, threads, classifier: null,
    build: (photos, base) => build(photos, base),
    model: () => page.model,
    /// The model file's bytes from `offset`, at most `len`, in base64 (for WebDriver).
    modelBase64: (offset, len) => btoa(Array.from(page.model.subarray(offset, offset + len), (b) => String.fromCharCode(b)).join("")),
    embedPhoto,
    embedder: page.embedder,
  };
  // The kept model, else the one the site was exported with, else none.
  let model = await loadStored().catch(() => null);
  if (!model) {
    const r = await fetch("model.onnx").catch(() => null);
    if (r?.ok) model = new Uint8Array(await r.arrayBuffer());
  }
  await useModel(model ? new Uint8Array(model) : null);
  const n = page.info?.labels.length || 0;
  status(n ? `Ready: ${n} classes, on this device (${threads} thread${threads > 1 ? "s" : ""}).`
    : "No classes yet: name a class, add its photos, then Build.");
  document.body.dataset.state = "ready";

  $("#class-photos").addEventListener("change", (e) => { addPhotos([...e.target.files]); e.target.value = ""; });
  $("#class-frame").disabled = !navigator.mediaDevices?.getUserMedia;
  $("#class-frame").addEventListener("click", () => frameForClass().catch((e) => status(`Camera: ${message(e)}`, true)));
  $("#build").addEventListener("click", () => buildPending());
  $("#file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) classifyFile(f).catch((err) => status(`Cannot classify ${f.name}: ${message(err)}`, true));
  });
  const cam = $("#camera");
  cam.disabled = !navigator.mediaDevices?.getUserMedia;
  cam.addEventListener("click", () => camera().catch((err) => status(`Camera: ${message(err)}`, true)));

  const manifest = params.get("build");
  if (manifest) {
    const r = await buildFromManifest(manifest);
    $("#result").textContent = JSON.stringify(r);
    document.body.dataset.state = "built";
    status(`Built: ${r.classes} classes from ${r.images} photos in ${(r.build_ms / 1000).toFixed(1)} s.`);
  }
  const image = params.get("image");
  if (image) {
    const r = await fetch(image);
    if (!r.ok) throw new Error(`cannot fetch ${image}: HTTP ${r.status}`);
    await classifyFile(await r.blob());
  }
}

start().catch((e) => {
  document.body.dataset.state = "failed";
  status(`Cannot run here: ${message(e)}`, true);
  $("#result").textContent = JSON.stringify({ error: message(e) });
});
