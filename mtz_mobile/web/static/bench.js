// Zipped file vs the separate per-task files (convert --baselines), one set per fresh page:
// WebAssembly memory (its size, and the allocator's top: runtime.js heapTopBytes), compile time,
// per-task latency. Driven by mtz_mobile/web/drive.mjs (kind "bench").
import {
  compile, decodeBase64, fetchBytes, fetchJson, fitGrey, heapTopBytes, initRuntime, inputGeometry, median,
  preprocess, runSignature, wasmMemoryBytes,
} from './runtime.js';

const loaded = {runs: []};   // runs: [{model, key, task, spec, output, input}]

/** The files of a set: the zipped model with every task, or one baseline file per task. */
function filesOf(set, info) {
  const tasks = info.manifest.tasks;
  if (set === 'zipped') return [{url: '/model.tflite', tasks}];
  if (set !== 'separate') throw new Error(`unknown set ${set}: zipped or separate`);
  return tasks.map((t) => {
    if (!info.baselines[t.name]) {
      throw new Error(`no baseline file for task ${t.name} beside ${info.file}: convert with --baselines`);
    }
    return {url: `/baseline/${encodeURIComponent(t.name)}.tflite`, tasks: [t]};
  });
}

function sampleInput(spec, preprocessing, samples) {
  const [h, w] = samples.shape;
  const raw = fitGrey(decodeBase64(samples.samples[0].pixels), h, w, inputGeometry(spec));
  return preprocess(raw, preprocessing);
}

/** The runtime alone: the figures every set starts from. */
async function init() {
  await initRuntime();
  return {wasm_before: wasmMemoryBytes(), heap_top_before: heapTopBytes()};
}

async function load(set) {
  await initRuntime();
  const info = await fetchJson('/manifest.json');
  if (info.error) throw new Error(info.error);
  const samples = await fetchJson('/samples.json');
  const files = filesOf(set, info);
  const bytes = await Promise.all(files.map((f) => fetchBytes(f.url)));   // the network is not timed
  const fileBytes = bytes.reduce((n, b) => n + b.length, 0);
  const start = performance.now();
  const models = [];
  for (const b of bytes) models.push(await compile(b));
  const loadMs = performance.now() - start;
  loaded.runs = files.flatMap((f, i) => f.tasks.map((t) => ({
    model: models[i], key: t.signature_key, task: t.name, spec: t.input, output: t.output.name,
    input: sampleInput(t.input, t.preprocessing, samples)})));
  // the joint signature feeds every task one input: timed only when the tasks preprocess alike
  const joint = info.manifest.joint, pre = info.manifest.tasks.map((t) => t.preprocessing);
  const alike = pre.every((p) => p.mean === pre[0].mean && p.scale === pre[0].scale);
  loaded.joint = set === 'zipped' && joint && alike ? {model: models[0], key: joint.signature_key, task: joint.signature_key,
    spec: joint.input, input: sampleInput(joint.input, pre[0], samples)} : null;
  return {files: files.map((f) => f.url), file_bytes: fileBytes, wasm_after_load: wasmMemoryBytes(),
          heap_top_after_load: heapTopBytes(), load_ms: loadMs, cross_origin_isolated: self.crossOriginIsolated};
}

async function runEveryTask() {
  const firstRunMs = {};
  for (const r of loaded.runs) firstRunMs[r.task] = (await runSignature(r.model, r.key, r.spec, r.input)).ms;
  return {first_run_ms: firstRunMs, wasm_after_run: wasmMemoryBytes(), heap_top_after_run: heapTopBytes()};
}

/** The median of ``runs`` timed runs after ``warmup``, the signature they ran and the last run's outputs. */
async function timeRuns(r, runs, warmup) {
  for (let i = 0; i < warmup; i++) await runSignature(r.model, r.key, r.spec, r.input);
  const times = [];
  let last = null;
  for (let i = 0; i < runs; i++) {
    last = await runSignature(r.model, r.key, r.spec, r.input);
    times.push(last.ms);
  }
  return {ms: median(times), key: r.key, outputs: last.outputs};
}

/** Median ms per task (and the joint signature's, zipped only); per task, the signature timed and its
 * output on the sample (so that the caller can check each task was timed on its own signature). */
async function latency(runs, warmup) {
  const out = {}, signatures = {}, outputs = {};
  for (const r of loaded.runs) {
    const timed = await timeRuns(r, runs, warmup);
    out[r.task] = timed.ms;
    signatures[r.task] = timed.key;
    outputs[r.task] = Array.from(timed.outputs[r.output] || []);
  }
  if (loaded.joint) out[loaded.joint.task] = (await timeRuns(loaded.joint, runs, warmup)).ms;
  return {median_ms: out, signatures, outputs, wasm_after_latency: wasmMemoryBytes()};
}

window.mtzBench = {init, load, runEveryTask, latency};
