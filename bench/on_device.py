#!/usr/bin/env python3
"""In-browser latency per image (issue 14) against `cbr classify` warm, in one run.

    python3 bench/on_device.py [--reps 15]      # ~2 minutes; Python standard library only

1. Builds a model on the default embedder from 5 photos of each of the 8 `scenes` classes
   (the test fixtures, scripts/setup.sh) and exports it with `cbr export-web`.
2. Serves the site from two loopback static servers: one plain, one cross-origin isolated
   (COOP/COEP headers: onnxruntime-web may then use threads).
3. Headless Chromium (chromedriver), for each configuration: WASM SIMD on 1 thread (plain
   server, `?threads=1`) and WASM SIMD + threads (isolated server, `?threads=2`; this machine
   has 2 cores): per image, the median over REPS runs of
     - the whole answer (decode, cbr's resize, normalise, run, answer: `classifyBlob`), and
     - the model run alone (`session.run` on a prepared tensor),
   over scikit-image's photographs (300-1411 px), after 3 warm-up runs.
4. `cbr classify` warm per image = (t(N images) - t(1 image)) / (N - 1), the photographs
   repeated to N, median of 3 (bench/build_speed.sh's definition; both cores, decoding
   overlapped with the runs, batches up to the model's batch size).
Prints a Markdown table.
"""

import argparse
import functools
import http.server
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cbr_bin():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    path = os.path.join(target, "release", "cbr")
    if not os.path.exists(path):
        sys.exit(f"on_device.py: {path} is missing: cargo build --release")
    return path


def fixtures():
    d = os.environ.get("CBR_FIXTURES", os.path.join(REPO, ".fixtures"))
    if not os.path.exists(os.path.join(d, "VERSION")):
        sys.exit(f"on_device.py: no fixtures in {d}: run scripts/setup.sh")
    return d


class Handler(http.server.SimpleHTTPRequestHandler):
    isolated = False

    def end_headers(self):
        if self.isolated:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, *args):
        pass


Handler.extensions_map = {**Handler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm"}


def serve(root, isolated):
    handler = type("H", (Handler,), {"isolated": isolated})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class WebDriver:
    def __init__(self, profile):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if self.call("GET", "/status")["value"]["ready"]:
                    break
            except OSError:
                time.sleep(0.1)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium") or "/usr/bin/chromium", "args": args}}}}
        self.session = self.call("POST", "/session", caps)["value"]["sessionId"]
        self.call("POST", f"/session/{self.session}/timeouts", {"script": 600_000})

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    def goto(self, url):
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def run_async(self, body):
        script = ("const done = arguments[arguments.length - 1];"
                  f"(async () => {{ {body} }})().then(done, e => done({{error: String(e && e.stack || e)}}));")
        v = self.call("POST", f"/session/{self.session}/execute/async", {"script": script, "args": []})["value"]
        if isinstance(v, dict) and "error" in v:
            sys.exit(f"on_device.py: the page failed: {v['error']}")
        return v

    def close(self):
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.kill()
            self.proc.wait()


# Runs in the page: per photo, median ms of the whole answer and of the model run alone.
MEASURE = """
const c = window.cbrPage.classifier, reps = %d, names = %s, out = {};
const median = (v) => { v = [...v].sort((a, b) => a - b); return v[Math.floor(v.length / 2)]; };
const mod = await import('./cbr-device.js');
for (const n of names) {
  const blob = await (await fetch('photos/' + n)).blob();
  for (let i = 0; i < 3; i++) await c.classifyBlob(blob);
  const whole = [];
  for (let i = 0; i < reps; i++) { const t = performance.now(); await c.classifyBlob(blob); whole.push(performance.now() - t); }
  const { data, width, height } = await mod.decodeImage(blob);
  const p = c.info.preprocess;
  const rgba = data, rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) { rgb[3*i] = rgba[4*i]; rgb[3*i+1] = rgba[4*i+1]; rgb[3*i+2] = rgba[4*i+2]; }
  const tensor = mod.toTensor(mod.resizeRgb(rgb, width, height, p.width, p.height, p.resize), p);
  const dims = p.layout === 'nhwc' ? [1, p.height, p.width, 3] : [1, 3, p.height, p.width];
  const feeds = { [c.input]: new c.ort.Tensor('float32', tensor, dims) };
  const run = [];
  for (let i = 0; i < reps; i++) { const t = performance.now(); await c.session.run(feeds, ['scores']); run.push(performance.now() - t); }
  out[n] = { whole: median(whole), run: median(run), size: [width, height] };
}
return { out, threads: window.cbrPage.threads, isolated: self.crossOriginIsolated };
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    a = ap.parse_args()
    cbr, fx = cbr_bin(), fixtures()
    work = tempfile.mkdtemp(prefix="cbr-on-device-")
    try:
        index = os.path.join(work, "index")
        for label in sorted(os.listdir(os.path.join(fx, "scenes"))):
            os.makedirs(os.path.join(index, label))
            for f in sorted(os.listdir(os.path.join(fx, "scenes", label)))[:5]:
                shutil.copy(os.path.join(fx, "scenes", label, f), os.path.join(index, label, f))
        model = os.path.join(work, "scenes.onnx")
        subprocess.run([cbr, "build", index, "-o", model], check=True, capture_output=True)
        site = os.path.join(work, "site")
        subprocess.run([cbr, "export-web", model, "-o", site], check=True, capture_output=True)
        photos_dir = os.path.join(fx, "photos")
        names = sorted(os.listdir(photos_dir))
        shutil.copytree(photos_dir, os.path.join(site, "photos"))

        results = {}
        driver = WebDriver(os.path.join(work, "profile"))
        try:
            for key, isolated, threads in [("simd", False, 1), ("simd+threads", True, 2)]:
                server, url = serve(site, isolated)
                driver.goto(f"{url}index.html?threads={threads}")
                driver.run_async("for (let i = 0; i < 600 && !window.cbrPage; i++) await new Promise(r => setTimeout(r, 100)); "
                                 "if (!window.cbrPage) throw new Error(document.querySelector('#status').textContent); return 1;")
                results[key] = driver.run_async(MEASURE % (a.reps, json.dumps(names)))
                server.shutdown()
        finally:
            driver.close()

        # cbr classify warm: the photographs repeated to N images, minus the 1-image run.
        paths = [os.path.join(photos_dir, n) for n in names]
        many = paths * 10

        def timed(args):
            t = time.perf_counter()
            subprocess.run([cbr, "classify", "-k", "1", model, *args], check=True, capture_output=True)
            return time.perf_counter() - t

        one = statistics.median(timed(paths[:1]) for _ in range(3))
        full = statistics.median(timed(many) for _ in range(3))
        warm = (full - one) / (len(many) - 1) * 1e3

        simd, thr = results["simd"], results["simd+threads"]
        print(f"#### On the device: onnxruntime-web in headless Chromium vs cbr classify — "
              f"{time.strftime('%Y-%m-%d')} — {os.cpu_count()} cores; load avg {os.getloadavg()[0]:.2f}\n")
        print(f"model: efficientnet-lite0 + 8-class head ({os.path.getsize(model) / 1e6:.1f} MB); "
              f"median of {a.reps} runs per image after 3 warm-up runs; "
              f"threads: {simd['threads']} (isolated: {simd['isolated']}) and {thr['threads']} (isolated: {thr['isolated']})\n")
        print("| photo | size | SIMD whole ms | SIMD run ms | SIMD+threads whole ms | SIMD+threads run ms |")
        print("|---|---|---:|---:|---:|---:|")
        for n in names:
            s, t = simd["out"][n], thr["out"][n]
            print(f"| {n} | {s['size'][0]}x{s['size'][1]} | {s['whole']:.1f} | {s['run']:.1f} | {t['whole']:.1f} | {t['run']:.1f} |")
        med = lambda r, k: statistics.median(r["out"][n][k] for n in names)
        print(f"| **median** | | **{med(simd, 'whole'):.1f}** | **{med(simd, 'run'):.1f}** | "
              f"**{med(thr, 'whole'):.1f}** | **{med(thr, 'run'):.1f}** |")
        print(f"\ncbr classify warm, per image (({len(many)} images) - (1 image)) / {len(many) - 1}: "
              f"**{warm:.1f} ms** (t(1) = {one:.2f} s, t({len(many)}) = {full:.2f} s; both cores, batched)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
