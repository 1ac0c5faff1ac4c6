#!/usr/bin/env node
// cbr's build in Node, by the WebAssembly core (web/pkg): for tests, CI and people who script it.
//
//   node scripts/cbr-node.mjs build --embeddings PARQUET... --embedder E.onnx -o OUT [build flags]
//   node scripts/cbr-node.mjs add MODEL --embeddings PARQUET... -o OUT
//   node scripts/cbr-node.mjs remove MODEL --label L... -o OUT
//
// `build` reads the embedding shards `cbr embed` writes (Parquet, by hyparquet), and writes the
// model file `cbr build --embeddings` writes from them, byte for byte: the same head,
// calibration and writer, compiled to WebAssembly. `add` adds the shards' images to a model
// (made by the model's own embedder), `remove` removes classes: the files `cbr add`/`cbr
// remove` write. The build flags are cbr build's (--original, --aggregate max,
// --power 1, --center false, --augment, --no-unknown, --index-dtype int8, --format tflite,
// --tflite-block int8, --name ...); the embedder must be the file the shards were made with
// (.tflite for a TFLite classifier). --repeat N builds N times and reports each time (benchmarks).
// Run scripts/wasm.sh once first.

import { readFileSync, readdirSync, renameSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { parquetMetadata, parquetReadObjects } from "hyparquet";

import { loadCore } from "../web/pkg/cbr-core.mjs";

const USAGE = `usage: node scripts/cbr-node.mjs build --embeddings PARQUET... --embedder FILE -o OUT [cbr build flags]
       node scripts/cbr-node.mjs add MODEL --embeddings PARQUET... -o OUT
       node scripts/cbr-node.mjs remove MODEL --label LABEL... -o OUT`;

// cbr build's flags that take no value; every other flag takes one.
const SWITCHES = new Set(["augment", "original", "no_unknown"]);

function fail(message) {
  console.error(`cbr-node: ${message}`);
  process.exit(1);
}

/// The command line as { command, model, embeddings: [...], labels: [...], embedder, output, request }.
function parseArgs(argv) {
  const command = argv[0];
  if (!["build", "add", "remove"].includes(command)) fail(USAGE);
  const out = { command, model: null, embeddings: [], labels: [], embedder: null, output: null, request: {}, repeat: 1 };
  let i = 1;
  if (command !== "build") out.model = argv[i++];
  const values = (into) => {
    while (i + 1 < argv.length && !argv[i + 1].startsWith("-")) into.push(argv[++i]);
  };
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--embeddings") values(out.embeddings);
    else if (arg === "--label") values(out.labels);
    else if (arg === "--embedder") out.embedder = argv[++i];
    else if (arg === "--repeat") out.repeat = Number(argv[++i]);
    else if (arg === "-o" || arg === "--output") out.output = argv[++i];
    else if (arg.startsWith("--")) {
      const [flag, inline] = arg.slice(2).split("=", 2);
      const name = flag.replaceAll("-", "_");
      if (SWITCHES.has(name)) out.request[name] = true;
      else {
        const text = inline ?? argv[++i];
        if (text === undefined) fail(`--${flag} needs a value`);
        out.request[name] = value(text);
      }
    } else fail(`unexpected argument ${JSON.stringify(arg)}\n${USAGE}`);
  }
  const complete = {
    build: out.embeddings.length && out.embedder,
    add: out.model && out.embeddings.length,
    remove: out.model && out.labels.length,
  }[command];
  if (!complete || !out.output) fail(USAGE);
  return out;
}

/// A flag's value as JSON: numbers and true/false as such, anything else a string.
function value(text) {
  if (text === "true" || text === "false") return text === "true";
  return text.trim() !== "" && !Number.isNaN(Number(text)) ? Number(text) : text;
}

/// The shard files of --embeddings: files, folders (their *.parquet) and patterns with '*'
/// in the file name, sorted, as `cbr build --embeddings` lists them.
function expand(patterns) {
  const files = [];
  for (const p of patterns) {
    const name = basename(p);
    let dir = null;
    let pattern = null;
    if (statSync(p, { throwIfNoEntry: false })?.isDirectory()) [dir, pattern] = [p, "*.parquet"];
    else if (name.includes("*")) [dir, pattern] = [dirname(p) || ".", name];
    if (dir === null) {
      files.push(p);
      continue;
    }
    const re = new RegExp("^" + pattern.split("*").map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*") + "$");
    const found = readdirSync(dir).filter((f) => re.test(f)).map((f) => join(dir, f));
    if (!found.length) fail(`no embedding shards match ${p}`);
    files.push(...found);
  }
  return files.sort();
}

/// The rows of the shards, in order, each image once (per label): what `cbr build
/// --embeddings` indexes, with the embedder and preprocessing the shards record.
async function readShards(files) {
  let source = null;
  const labels = [];
  const imageIds = [];
  const values = [];
  const seen = new Set();
  for (const file of files) {
    const bytes = readFileSync(file);
    const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    const kv = Object.fromEntries((parquetMetadata(buffer).key_value_metadata ?? []).map((e) => [e.key, e.value]));
    if (!kv["cbr.embedder"] || !kv["cbr.preprocess"]) fail(`${file} was not written by \`cbr embed\``);
    const here = { embedder: JSON.parse(kv["cbr.embedder"]), preprocess: JSON.parse(kv["cbr.preprocess"]) };
    if (source && JSON.stringify(source) !== JSON.stringify(here)) {
      fail(`${file} was embedded with another embedder or preprocessing than ${files[0]}`);
    }
    source = here;
    const dim = here.embedder.dim;
    for (const row of await parquetReadObjects({ file: buffer })) {
      const key = `${row.label}\u0000${row.image_id}`;
      if (seen.has(key)) continue; // the same image twice in a class: cbr keeps the first
      seen.add(key);
      for (const e of [row.embedding, row.mirror_embedding]) {
        if (e === undefined) continue;
        if (e.length !== dim) fail(`${file}: an embedding of ${e.length} values, not ${dim}`);
        labels.push(row.label);
        imageIds.push(row.image_id);
        values.push(...e);
      }
    }
  }
  return { ...source, labels, imageIds, embeddings: Float32Array.from(values) };
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it).
function writeAtomic(path, bytes) {
  const temp = `${path}.cbr-node-${process.pid}.tmp`;
  writeFileSync(temp, bytes);
  renameSync(temp, path);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const wasm = new URL("../web/pkg/cbr_core.wasm", import.meta.url);
  let core;
  try {
    core = await loadCore(readFileSync(wasm));
  } catch (e) {
    fail(`cannot load ${wasm.pathname} (run scripts/wasm.sh): ${e.message}`);
  }
  if (args.command === "remove") {
    const { model, report } = core.remove(readFileSync(args.model), args.labels);
    writeAtomic(args.output, model);
    console.log(JSON.stringify(report));
    return;
  }
  const shards = await readShards(expand(args.embeddings));
  const modelBytes = args.model && readFileSync(args.model);
  if (args.command === "add" && core.info(modelBytes).info.embedder.sha256 !== shards.embedder.sha256) {
    fail(`the shards were embedded with ${shards.embedder.name}, not the embedder of ${args.model}`);
  }
  const embedder = args.embedder && readFileSync(args.embedder);
  const run = () =>
    args.command === "add"
      ? core.add(modelBytes, shards)
      : core.build({
          embedder,
          embedderInfo: shards.embedder,
          preprocess: shards.preprocess,
          labels: shards.labels,
          imageIds: shards.imageIds,
          embeddings: shards.embeddings,
          request: args.request,
        });
  const times = [];
  let result;
  for (let r = 0; r < Math.max(1, args.repeat); r++) {
    const started = performance.now();
    result = run();
    times.push(performance.now() - started);
  }
  const { model, report } = result;
  const ms = times[0];
  writeAtomic(args.output, model);
  console.error(`wrote ${args.output}: ${report.classes} classes, ${report.rows} rows in ${ms.toFixed(1)} ms`);
  console.log(JSON.stringify({ ...report, build_ms: ms, times_ms: times }));
}

main().catch((e) => fail(e.kind ? `${e.message} (${e.kind})` : e.stack || String(e)));
