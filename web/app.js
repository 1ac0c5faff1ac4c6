// cbr serve web app: plain JavaScript over the JSON API (see /openapi.json).
"use strict";

const $ = (s, root = document) => root.querySelector(s);
const IMAGE_EXT = /\.(jpe?g|png|gif|bmp|webp|tiff?|pnm|ppm|pgm|pbm)$/i;
const state = { model: "", device: null, limits: { max_upload: 32 << 20 }, live: null, stream: null, cameraLabel: null, lastTry: null };

function api(path) { return "/api/models" + (path || ""); }
function enc(s) { return encodeURIComponent(s); }

async function request(method, url, body) {
  const opts = { method };
  if (body instanceof FormData || body instanceof Blob) opts.body = body;
  else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers = { "Content-Type": "application/json" }; }
  const r = await fetch(url, opts);
  const ct = r.headers.get("content-type") || "";
  const data = ct.includes("json") ? await r.json() : null;
  if (!r.ok) {
    const msg = data && data.error ? data.error.message : `${r.status} ${r.statusText}`;
    const e = new Error(msg); e.status = r.status; e.retryAfter = r.headers.get("retry-after"); throw e;
  }
  return data;
}

function say(text, isError) {
  const m = $("#message");
  m.textContent = text || "";
  m.className = isError ? "error" : "";
}

// ---- models ----

async function loadModels(select) {
  const { models } = await request("GET", api());
  const sel = $("#model-select");
  sel.innerHTML = "";
  if (!models.length) sel.append(new Option("(none yet)", ""));
  for (const m of models) sel.append(new Option(`${m.name} (${m.labels.length} classes, ${m.images} images)`, m.name));
  const want = select !== undefined ? select : (state.model || localStorage.getItem("cbr-model") || (models[0] && models[0].name) || "");
  sel.value = models.some(m => m.name === want) ? want : (models[0] ? models[0].name : "");
  await openModel(sel.value);
}

async function openModel(name) {
  state.model = name;
  if (name) localStorage.setItem("cbr-model", name);
  $("#workspace").hidden = !name;
  stopLive();
  clearResult();
  if (name) await refresh();
}

async function refresh() {
  if (!state.model) return;
  const m = await request("GET", api("/" + enc(state.model)));
  const opt = [...$("#model-select").options].find(o => o.value === m.name);
  if (opt) opt.textContent = `${m.name} (${m.labels.length} classes, ${m.images} images)`;
  renderClasses(m);
  renderBuild(m.build, m);
}

function renderClasses(m) {
  const box = $("#classes");
  box.innerHTML = "";
  for (const l of m.labels) box.append(classCard(l));
  if (!m.labels.length) box.textContent = "No classes yet: add one above, or drop a folder of folders.";
}

function classCard(l) {
  const card = $("#class-template").content.firstElementChild.cloneNode(true);
  card.dataset.label = l.name;
  $(".class-name", card).textContent = l.name;
  $(".count", card).textContent = `${l.count} image${l.count === 1 ? "" : "s"}`;
  const fi = $(".file-input", card), di = $(".folder-input", card);
  fi.dataset.label = l.name; di.dataset.label = l.name;
  fi.addEventListener("change", () => { upload(l.name, [...fi.files]); fi.value = ""; });
  di.addEventListener("change", () => { upload(l.name, [...di.files]); di.value = ""; });
  $(".camera-btn", card).addEventListener("click", () => openCamera(l.name));
  $(".delete-class", card).addEventListener("click", async () => {
    if (!confirm(`Remove class "${l.name}" and its ${l.count} images?`)) return;
    await guarded(() => request("DELETE", api(`/${enc(state.model)}/labels/${enc(l.name)}`)));
    refresh();
  });
  const thumbs = $(".thumbs", card);
  for (const id of l.images || []) {
    const t = document.createElement("div");
    t.className = "thumb";
    const img = document.createElement("img");
    img.loading = "lazy"; img.alt = l.name;
    img.src = api(`/${enc(state.model)}/labels/${enc(l.name)}/images/${id}`);
    const x = document.createElement("button");
    x.textContent = "✕"; x.title = "Remove this image";
    x.addEventListener("click", async () => {
      await guarded(() => request("DELETE", img.src));
      refresh();
    });
    t.append(img, x);
    thumbs.append(t);
  }
  dropTarget(card, async files => upload(l.name, files));
  return card;
}

async function guarded(f) {
  try { return await f(); } catch (e) { say(e.message, true); throw e; }
}

// ---- uploads: files, folders, drag and drop ----

function isImage(f) { return (f.type && f.type.startsWith("image/")) || IMAGE_EXT.test(f.name); }

async function upload(label, files) {
  files = files.filter(isImage);
  if (!files.length) { say("No image files there.", true); return; }
  const max = state.limits.max_upload * 0.9;
  let done = 0, batch = [], size = 0;
  const send = async () => {
    if (!batch.length) return;
    const fd = new FormData();
    for (const f of batch) fd.append("file", f, f.name || "capture.jpg");
    say(`Uploading to "${label}": ${done}/${files.length}…`);
    await request("POST", api(`/${enc(state.model)}/labels/${enc(label)}/images`), fd);
    done += batch.length; batch = []; size = 0;
  };
  try {
    for (const f of files) {
      if (f.size > max) { say(`${f.name} is too large (${(f.size / 1e6).toFixed(1)} MB)`, true); continue; }
      if (batch.length >= 16 || size + f.size > max) await send();
      batch.push(f); size += f.size;
    }
    await send();
    say(`Added ${done} image${done === 1 ? "" : "s"} to "${label}".`);
  } catch (e) {
    say(`Upload to "${label}" failed after ${done} images: ${e.message}`, true);
  }
  await refresh();
}

// Every file under a dropped entry (folders recursively).
async function entryFiles(entry) {
  if (entry.isFile) return [await new Promise((ok, bad) => entry.file(ok, bad))];
  if (!entry.isDirectory) return [];
  const reader = entry.createReader();
  const out = [];
  for (;;) {
    const batch = await new Promise((ok, bad) => reader.readEntries(ok, bad));
    if (!batch.length) break;
    for (const e of batch) if (!e.name.startsWith(".")) out.push(...await entryFiles(e));
  }
  return out;
}

function droppedEntries(ev) {
  const items = [...(ev.dataTransfer.items || [])];
  const entries = items.map(i => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  return entries.length ? entries : null;
}

function dropTarget(el, onFiles) {
  el.addEventListener("dragover", ev => { ev.preventDefault(); el.classList.add("over"); });
  el.addEventListener("dragleave", () => el.classList.remove("over"));
  el.addEventListener("drop", async ev => {
    ev.preventDefault(); ev.stopPropagation(); el.classList.remove("over");
    const entries = droppedEntries(ev);
    let files = [];
    if (entries) for (const e of entries) files.push(...await entryFiles(e));
    else files = [...ev.dataTransfer.files];
    onFiles(files);
  });
}

// A folder of folders dropped on the page: one class per folder.
function setupClassDrop() {
  const zone = $("#drop-classes");
  zone.addEventListener("dragover", ev => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async ev => {
    ev.preventDefault(); zone.classList.remove("over");
    const entries = droppedEntries(ev) || [];
    const dirs = [];
    for (const e of entries) {
      if (!e.isDirectory) continue;
      // A single folder holding class folders: use its children.
      const children = await new Promise((ok, bad) => e.createReader().readEntries(ok, bad));
      const sub = children.filter(c => c.isDirectory && !c.name.startsWith("."));
      if (entries.length === 1 && sub.length && children.every(c => c.isDirectory || c.name.startsWith("."))) dirs.push(...sub);
      else dirs.push(e);
    }
    if (!dirs.length) { say("Drop folders here (one per class); drop single images onto a class.", true); return; }
    for (const d of dirs) {
      await request("POST", api(`/${enc(state.model)}/labels`), { name: d.name }).catch(e => { if (e.status !== 409) say(e.message, true); });
      await upload(d.name, await entryFiles(d));
    }
  });
}

// ---- webcam capture into a class ----

async function camera() {
  if (state.stream) return state.stream;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw new Error("no webcam access in this browser (it needs https or localhost)");
  state.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  return state.stream;
}

function releaseCamera() {
  if (state.stream && !state.live && !$("#camera").open) {
    for (const t of state.stream.getTracks()) t.stop();
    state.stream = null;
  }
}

function frameBlob(video) {
  const c = document.createElement("canvas");
  const scale = Math.min(1, 640 / Math.max(video.videoWidth, video.videoHeight));
  c.width = Math.round(video.videoWidth * scale); c.height = Math.round(video.videoHeight * scale);
  c.getContext("2d").drawImage(video, 0, 0, c.width, c.height);
  return new Promise(ok => c.toBlob(ok, "image/jpeg", 0.9));
}

async function openCamera(label) {
  try {
    const v = $("#camera-video");
    v.srcObject = await camera();
    await v.play();
    state.cameraLabel = label;
    $("#camera-label").textContent = `Capturing into "${label}"`;
    $("#camera").showModal();
  } catch (e) { say(`Webcam: ${e.message}`, true); }
}

function setupCamera() {
  $("#camera-snap").addEventListener("click", async () => {
    const blob = await frameBlob($("#camera-video"));
    const f = new File([blob], "webcam.jpg", { type: "image/jpeg" });
    await upload(state.cameraLabel, [f]);
  });
  $("#camera-close").addEventListener("click", () => { $("#camera").close(); releaseCamera(); });
}

// ---- build ----

function renderBuild(b, m) {
  const status = $("#build-status"), bar = $("#build-progress"), dl = $("#download");
  const running = b.state === "running" || b.state === "queued";
  $("#build").disabled = running;
  bar.hidden = !running;
  bar.max = Math.max(1, b.total); bar.value = b.done;
  if (running) status.textContent = b.state === "queued" ? "Waiting for the embedder…" : `Embedding images ${b.done}/${b.total}…`;
  else if (b.state === "failed") status.textContent = `Build failed: ${b.error}`;
  else if (b.built) {
    const stale = m && m.stale ? " — images changed since: build again" : "";
    status.textContent = `Built: ${b.built.classes} classes from ${b.built.images} images in ${b.built.seconds.toFixed(1)} s${stale}`;
  } else status.textContent = "Not built yet.";
  status.dataset.state = b.built && !running ? "built" : b.state;
  dl.hidden = !b.built || running;
  dl.href = api(`/${enc(state.model)}/model.onnx`);
  dl.setAttribute("download", `${state.model}.onnx`);
  const web = $("#download-web");
  web.hidden = dl.hidden;
  web.href = api(`/${enc(state.model)}/export-web.zip`);
  web.setAttribute("download", `${state.model}-web.zip`);
  return running;
}

async function build() {
  try {
    say("");
    renderBuild(await request("POST", api(`/${enc(state.model)}/build`)));
    for (;;) {
      await new Promise(r => setTimeout(r, 300));
      const b = await request("GET", api(`/${enc(state.model)}/build`));
      if (!renderBuild(b)) break;
    }
    state.device = null; // the on-device copy is of the previous build
    await refresh();
    if (state.lastTry) classifyBlob(state.lastTry);
  } catch (e) { say(e.message, true); refresh(); }
}

// ---- try: classify an image or the live webcam ----

// null: the model's own threshold (if it has one).
function threshold() { return $("#threshold-auto").checked ? null : parseFloat($("#threshold").value); }

function clearResult() { $("#result-label").textContent = ""; $("#bars").innerHTML = ""; }

function renderResult(r) {
  const label = $("#result-label");
  label.textContent = r.unknown ? "unknown" : r.label;
  label.className = "result-label" + (r.unknown ? " unknown" : "");
  label.title = r.unknown ? `best score ${r.top[0] ? r.top[0].score.toFixed(2) : "?"} is below the threshold ${r.threshold}` : "";
  const bars = $("#bars");
  bars.innerHTML = "";
  r.top.slice(0, 3).forEach((t, i) => {
    const d = document.createElement("div");
    d.className = "bar" + (i === 0 && !r.unknown ? " first" : "");
    const name = document.createElement("div"); name.className = "name";
    const a = document.createElement("span"); a.textContent = t.label;
    const b = document.createElement("span"); b.textContent = t.score.toFixed(3);
    name.append(a, b);
    const track = document.createElement("div"); track.className = "track";
    const fill = document.createElement("div"); fill.className = "fill";
    fill.style.width = `${Math.max(0, Math.min(1, t.score)) * 100}%`;
    track.append(fill); d.append(name, track); bars.append(d);
  });
}

// ---- on this device: the model downloaded once, run by onnxruntime-web (/cbr-device.js) ----

// The on-device classifier for the open model, loaded on first use (null when not loaded).
async function deviceClassifier() {
  if (state.device && state.device.model === state.model) return state.device.classifier;
  const model = state.model;
  $("#device-status").textContent = "downloading the model…";
  const device = await import("/cbr-device.js");
  const [info, bytes] = await Promise.all([
    request("GET", api(`/${enc(model)}/info`)),
    fetch(api(`/${enc(model)}/model.onnx`)).then(r => { if (!r.ok) throw new Error(`model download: HTTP ${r.status}`); return r.arrayBuffer(); }),
  ]);
  const [ort, core] = await Promise.all([device.loadOrt("/ort/"), device.loadCbrCore()]);
  const classifier = await device.DeviceClassifier.create(ort, bytes, info, core);
  state.device = { model, classifier, pixelsOf: device.pixelsOf };
  const threads = device.ortThreads(ort);
  $("#device-status").textContent = `on this device (${threads} thread${threads > 1 ? "s" : ""})`;
  return classifier;
}

// Whether to classify here; a device that cannot (no WebAssembly, runtime not installed on the
// server) falls back to the server, saying why.
async function onDevice() {
  if (!$("#on-device").checked) return null;
  try { return await deviceClassifier(); }
  catch (e) {
    $("#on-device").checked = false;
    state.device = null;
    $("#device-status").textContent = `not on this device (${e.message || e}): using the server`;
    return null;
  }
}

async function classifyBlob(blob) {
  const local = await onDevice();
  if (local) {
    const t = threshold();
    const r = await local.classifyBlob(blob, 3, t);
    r.threshold = t ?? local.info.threshold;
    renderResult(r);
    return r;
  }
  const fd = new FormData();
  fd.append("file", blob, blob.name || "image.jpg");
  const t = threshold();
  const r = await request("POST", api(`/${enc(state.model)}/classify?k=3${t === null ? "" : "&threshold=" + t}`), fd);
  renderResult(r);
  return r;
}

function setupTry() {
  const fi = $("#try-file");
  fi.addEventListener("change", async () => {
    const f = fi.files[0];
    if (!f) return;
    stopLive();
    state.lastTry = f;
    const img = $("#try-preview");
    img.src = URL.createObjectURL(f); img.hidden = false; $("#try-video").hidden = true;
    try { say(""); await classifyBlob(f); } catch (e) { clearResult(); say(e.message, true); }
    fi.value = "";
  });
  const th = $("#threshold");
  const again = () => { if (state.lastTry && !state.live) classifyBlob(state.lastTry).catch(e => say(e.message, true)); };
  th.addEventListener("input", () => { $("#threshold-value").textContent = parseFloat(th.value).toFixed(2); });
  th.addEventListener("change", again);
  $("#threshold-auto").addEventListener("change", ev => { th.disabled = ev.target.checked; again(); });
  $("#try-webcam").addEventListener("click", () => state.live ? stopLive() : startLive());
  $("#on-device").addEventListener("change", ev => {
    if (!ev.target.checked) $("#device-status").textContent = "";
    again();
  });
}

async function startLive() {
  try {
    const v = $("#try-video");
    v.srcObject = await camera();
    await v.play();
    v.hidden = false; $("#try-preview").hidden = true;
    state.live = true;
    $("#try-webcam").textContent = "Stop webcam";
    let frames = 0, since = performance.now();
    while (state.live) {
      const t0 = performance.now();
      try {
        const local = await onDevice();
        if (local) {
          // On the device: the frame's pixels straight from the video, no JPEG round trip.
          const { data, width, height } = state.device.pixelsOf(v, v.videoWidth, v.videoHeight);
          const t = threshold();
          const r = await local.classifyRgba(data, width, height, 3, t);
          r.threshold = t ?? local.info.threshold;
          renderResult(r);
        } else {
          await classifyBlob(await frameBlob(v));
        }
        say("");
      }
      catch (e) { say(e.message, true); if (e.status !== 503) { stopLive(); break; } }
      frames++;
      const now = performance.now();
      if (now - since >= 1000) { $("#fps").textContent = `${(1000 * frames / (now - since)).toFixed(1)} fps`; frames = 0; since = now; }
      // The server gets a breather between frames; the device runs as fast as it can.
      const pause = state.device && $("#on-device").checked ? 0 : 150;
      await new Promise(r => setTimeout(r, Math.max(0, pause - (performance.now() - t0))));
    }
  } catch (e) { say(`Webcam: ${e.message}`, true); stopLive(); }
}

function stopLive() {
  if (!state.live) return;
  state.live = false;
  $("#try-webcam").textContent = "Live webcam";
  $("#fps").textContent = "";
  releaseCamera();
}

// ---- start ----

async function main() {
  $("#model-select").addEventListener("change", ev => openModel(ev.target.value).catch(e => say(e.message, true)));
  $("#create-model").addEventListener("click", async () => {
    const name = $("#new-model").value.trim();
    if (!name) return;
    try { await request("POST", api(), { name }); $("#new-model").value = ""; say(`Created model "${name}".`); await loadModels(name); }
    catch (e) { say(e.message, true); }
  });
  $("#new-model").addEventListener("keydown", ev => { if (ev.key === "Enter") $("#create-model").click(); });
  $("#delete-model").addEventListener("click", async () => {
    if (!state.model || !confirm(`Delete model "${state.model}" with all its images?`)) return;
    try { await request("DELETE", api("/" + enc(state.model))); localStorage.removeItem("cbr-model"); state.model = ""; await loadModels(); }
    catch (e) { say(e.message, true); }
  });
  $("#add-class").addEventListener("click", async () => {
    const name = $("#new-class").value.trim();
    if (!name) return;
    try { await request("POST", api(`/${enc(state.model)}/labels`), { name }); $("#new-class").value = ""; await refresh(); }
    catch (e) { say(e.message, true); }
  });
  $("#new-class").addEventListener("keydown", ev => { if (ev.key === "Enter") $("#add-class").click(); });
  $("#build").addEventListener("click", build);
  setupClassDrop();
  setupCamera();
  setupTry();
  // Dropping files anywhere else must not navigate away from the app.
  window.addEventListener("dragover", ev => ev.preventDefault());
  window.addEventListener("drop", ev => ev.preventDefault());
  try { state.limits = await request("GET", "/api/health"); } catch (e) { /* keep defaults */ }
  try {
    await loadModels();
    // A build that was running when the page was (re)loaded: keep showing its progress.
    if (state.model) {
      const b = await request("GET", api(`/${enc(state.model)}/build`));
      if (b.state === "running" || b.state === "queued") build_poll();
    }
  } catch (e) { say(e.message, true); }
}

async function build_poll() {
  for (;;) {
    await new Promise(r => setTimeout(r, 500));
    const b = await request("GET", api(`/${enc(state.model)}/build`));
    if (!renderBuild(b)) break;
  }
  refresh();
}

main();
