// The exported page (`cbr export-web`): loads the model and onnxruntime-web from this site,
// then classifies photos and the camera on the device. `?image=URL` classifies that image on
// load and writes the answer, as JSON {label, unknown, top: [{label, score}]}, as the text of
// #result (the contract the tests use). `?threads=N` sets the runtime's threads (default: what
// the page allows; threads need cross-origin isolation).
import { loadOrt, ortThreads, DeviceClassifier, pixelsOf } from "./cbr-device.js";

const $ = (s) => document.querySelector(s);
const params = new URLSearchParams(location.search);

function status(text, error = false) {
  $("#status").textContent = text;
  $("#status").classList.toggle("error", error);
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

async function classifyFile(classifier, blob) {
  const img = $("#preview");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  img.hidden = false;
  $("#video").hidden = true;
  const t0 = performance.now();
  const answer = await classifier.classifyBlob(blob);
  show(answer);
  $("#fps").textContent = `${(performance.now() - t0).toFixed(0)} ms`;
  return answer;
}

async function camera(classifier) {
  const video = $("#video");
  if (video.srcObject) {
    video.srcObject.getTracks().forEach((t) => t.stop());
    video.srcObject = null;
    video.hidden = true;
    return;
  }
  const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  video.srcObject = stream;
  video.hidden = false;
  $("#preview").hidden = true;
  await video.play();
  let frames = 0;
  let since = performance.now();
  while (video.srcObject) {
    const { data, width, height } = pixelsOf(video, video.videoWidth, video.videoHeight);
    show(await classifier.classifyRgba(data, width, height));
    frames++;
    const now = performance.now();
    if (now - since >= 1000) {
      $("#fps").textContent = `${((1000 * frames) / (now - since)).toFixed(1)} fps`;
      frames = 0;
      since = now;
    }
    // Back to the event loop between frames: without it the page cannot paint, nor take the
    // click that stops the camera (the runtime's run resolves without ever yielding).
    await new Promise((r) => setTimeout(r, 0));
  }
}

async function start() {
  if ("serviceWorker" in navigator) {
    // Offline use: the worker keeps every file of the site (see sw.js).
    navigator.serviceWorker.register("sw.js").catch((e) => console.warn("no offline copy:", e));
  }
  const [info, model] = await Promise.all([
    fetch("model.json").then((r) => r.json()),
    fetch("model.onnx").then((r) => r.arrayBuffer()),
  ]);
  $("#classes").textContent = info.labels.join(", ");
  const ort = await loadOrt("ort/", Number(params.get("threads") || 0));
  const classifier = await DeviceClassifier.create(ort, model, info);
  window.cbrPage = { classifier, threads: ortThreads(ort) };
  status(`Ready: ${info.labels.length} classes, on this device (${ortThreads(ort)} thread${ortThreads(ort) > 1 ? "s" : ""}).`);
  document.body.dataset.state = "ready";
  $("#file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) classifyFile(classifier, f).catch((err) => status(`Cannot classify ${f.name}: ${err.message || err}`, true));
  });
  const cam = $("#camera");
  cam.disabled = !navigator.mediaDevices?.getUserMedia;
  cam.addEventListener("click", () => camera(classifier).catch((err) => status(`Camera: ${err.message || err}`, true)));
  const image = params.get("image");
  if (image) {
    const r = await fetch(image);
    if (!r.ok) throw new Error(`cannot fetch ${image}: HTTP ${r.status}`);
    await classifyFile(classifier, await r.blob());
  }
}

start().catch((e) => {
  document.body.dataset.state = "failed";
  status(`Cannot run the model here: ${e.message || e}`, true);
  $("#result").textContent = JSON.stringify({ error: String(e.message || e) });
});
