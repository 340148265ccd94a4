// LiteRT.js for the page and the bench page: load the runtime (wasm served from this server's
// /vendor/, never a CDN), compile a model from bytes, build a task's input from raw pixels, run a
// signature by key. Every tensor LiteRT.js hands out is deleted here (it has manual memory management).
import {Tensor, getGlobalLiteRt, loadAndCompile, loadLiteRt} from '@litertjs/core';

export const WASM_DIR = '/vendor/@litertjs/core/wasm/';
let runtime = null;

/** Loads LiteRT.js's wasm once (single-threaded: threads need cross-origin isolation, which a phone
 * reaching this server over plain http on the LAN does not get). */
export function initRuntime() {
  if (!runtime) {
    // the wasm module writes LiteRT's own log lines to stderr, which emscripten sends to console.error:
    // only its errors stay errors (the loader hands window.Module to the module factory)
    self.Module = {print: (line) => console.log(line), printErr: routeLog};
    runtime = loadLiteRt(WASM_DIR);
  }
  return runtime;
}

function routeLog(line) {
  if (/^(INFO|VERBOSE|DEBUG):|^Created TensorFlow Lite/.test(line)) console.debug(line);
  else if (/^WARNING:/.test(line)) console.warn(line);
  else console.error(line);
}

/** Bytes of the WebAssembly memory LiteRT.js runs in (it only grows). */
export function wasmMemoryBytes() {
  return getGlobalLiteRt().liteRtWasm.HEAPU8.buffer.byteLength;
}

/** Where a fresh 1 MiB block lands in the wasm heap (allocated and freed at once): the top of what the
 * allocator has handed out, a finer figure than the memory's size when nothing large was freed below it. */
export function heapTopBytes() {
  const wasm = getGlobalLiteRt().liteRtWasm;
  const ptr = wasm._malloc(1 << 20);
  wasm._free(ptr);
  return ptr;
}

export async function fetchJson(url) {
  const response = await fetch(url, {cache: 'no-store'});
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

export async function fetchBytes(url) {
  const response = await fetch(url, {cache: 'no-store'});
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** A CompiledModel on the wasm (CPU, XNNPACK) accelerator. */
export async function compile(bytes) {
  await initRuntime();
  return loadAndCompile(bytes, {accelerator: 'wasm'});
}

/** Height, width, channels of an input spec {shape, layout} from the manifest (batch first). */
export function inputGeometry(spec) {
  const [batch, ...dims] = spec.shape;
  if (batch !== 1) throw new Error(`input ${spec.name} has batch ${batch}; this page feeds one image (batch 1)`);
  if (spec.layout === 'HW') return {h: dims[0], w: dims[1], c: 1};
  if (spec.layout === 'HWC') return {h: dims[0], w: dims[1], c: dims[2]};
  return {h: 1, w: dims.reduce((a, b) => a * b, 1), c: 1, flat: true};
}

/** Raw grey pixels (h0 x w0) in the input's geometry: as they are when sizes match (a flat input takes
 * the image row-major), zero-padded centred when the input is larger (data.py's default rule),
 * bilinearly resized when smaller; grey repeated over the channels. */
export function fitGrey(grey, h0, w0, geo) {
  const {h, w, c} = geo;
  const out = new Float32Array(h * w * c);
  if (geo.flat) {
    if (w !== h0 * w0) throw new Error(`the task's input has ${w} values; the image has ${h0 * w0}`);
    out.set(grey);
    return out;
  }
  const pad = h >= h0 && w >= w0;
  const top = (h - h0) >> 1, left = (w - w0) >> 1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = pad ? padded(grey, h0, w0, y - top, x - left) : bilinear(grey, h0, w0, (y + 0.5) * h0 / h - 0.5,
                                                                      (x + 0.5) * w0 / w - 0.5);
      for (let k = 0; k < c; k++) out[(y * w + x) * c + k] = v;
    }
  }
  return out;
}

function padded(grey, h0, w0, y, x) {
  return y < 0 || x < 0 || y >= h0 || x >= w0 ? 0 : grey[y * w0 + x];
}

function bilinear(grey, h0, w0, y, x) {
  const clamp = (v, n) => Math.min(Math.max(v, 0), n - 1);
  const y0 = clamp(Math.floor(y), h0), x0 = clamp(Math.floor(x), w0);
  const y1 = clamp(y0 + 1, h0), x1 = clamp(x0 + 1, w0);
  const fy = Math.min(Math.max(y - y0, 0), 1), fx = Math.min(Math.max(x - x0, 0), 1);
  const top = grey[y0 * w0 + x0] * (1 - fx) + grey[y0 * w0 + x1] * fx;
  const bottom = grey[y1 * w0 + x0] * (1 - fx) + grey[y1 * w0 + x1] * fx;
  return top * (1 - fy) + bottom * fy;
}

/** The model input: (raw - mean) * scale in float32 arithmetic, as the host and the Android app do. */
export function preprocess(raw, preprocessing) {
  const mean = Math.fround(preprocessing.mean), scale = Math.fround(preprocessing.scale);
  const out = new Float32Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = Math.fround(Math.fround(raw[i] - mean) * scale);
  return out;
}

/** Runs signature ``key`` on one float32 input; returns {outputs: {name: Float32Array}, ms} where ms
 * covers the run and reading the outputs back. */
export async function runSignature(model, key, inputSpec, data) {
  if (inputSpec.dtype !== 'float32') throw new Error(`input ${inputSpec.name} is ${inputSpec.dtype}; this page feeds float32`);
  const input = new Tensor(data, inputSpec.shape);
  let results = null;
  try {
    const start = performance.now();
    results = await model.run(key, {[inputSpec.name]: input});
    const outputs = {};
    for (const [name, tensor] of Object.entries(results)) outputs[name] = Float32Array.from(tensor.toTypedArray());
    return {outputs, ms: performance.now() - start};
  } finally {
    input.delete();
    for (const tensor of Object.values(results || {})) tensor.delete();
  }
}

/** The signature keys a compiled model has, and each one's input shapes, as LiteRT.js reads them. */
export function signatureShapes(model) {
  const found = {};
  for (const [key, runner] of Object.entries(model.signatures)) {
    found[key] = Object.fromEntries(runner.getInputDetails().map((d) => [d.name, Array.from(d.shape)]));
  }
  return found;
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function decodeBase64(text) {
  return Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
}
