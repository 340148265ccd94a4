// The page: read /manifest.json, compile /model.tflite once, list the tasks (and the joint signature),
// run the chosen one on a sample or an uploaded image, show the top classes and the time per inference.
// For automation (tests/test_browser.py): body[data-state] is loading | ready | error; #result carries
// data-run (a counter), data-signature and data-outputs (JSON {task: [values]}); body[data-loads]
// counts model compilations (switching tasks must not add any); #result[data-ran] lists the signatures
// the last result ran (the joint one, or each task's own when the tasks preprocess differently).
import {
  compile, decodeBase64, fetchBytes, fetchJson, fitGrey, initRuntime, inputGeometry, median, preprocess,
  runSignature, signatureShapes,
} from './runtime.js';

const $ = (id) => document.getElementById(id);
const state = {info: null, manifest: null, model: null, samples: null, image: null, runs: 0, busy: Promise.resolve()};

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
  document.body.dataset.state = 'error';
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** The tasks' common preprocessing, or null when they differ: the joint signature feeds every task one
 * input, so tasks that preprocess differently run one by one, each with its own (as the Android app does). */
function jointPreprocessing(tasks) {
  const [first] = tasks;
  return tasks.every((t) => t.preprocessing.mean === first.preprocessing.mean
                            && t.preprocessing.scale === first.preprocessing.scale) ? first.preprocessing : null;
}

/** One signature run: its key, input spec, preprocessing, and the tasks it answers. */
function ownRun(t) {
  return {key: t.signature_key, input: t.input, preprocessing: t.preprocessing, tasks: [t], output: (task) => task.output.name};
}

/** The signatures the selector offers: each task's, then the joint one when the file has it. */
function choices() {
  const tasks = state.manifest.tasks;
  const list = tasks.map((t) => ({key: t.signature_key, label: t.name, input: t.input, tasks: [t], runs: [ownRun(t)]}));
  const joint = state.manifest.joint;
  if (joint) {
    const shared = jointPreprocessing(tasks);
    const runs = shared ? [{key: joint.signature_key, input: joint.input, preprocessing: shared, tasks,
                            output: (task) => task.name}] : tasks.map(ownRun);
    const label = shared ? `${joint.signature_key}: every task in one run (joint signature)`
      : `${joint.signature_key}: every task, each on its own signature (their preprocessing differs)`;
    list.push({key: joint.signature_key, label, input: joint.input, tasks, runs});
  }
  return list;
}

function selected() {
  return choices().find((c) => c.key === $('task').value);
}

/** Every signature the manifest names must be in the file LiteRT.js compiled, with the same input shape. */
function checkSignatures() {
  const found = signatureShapes(state.model);
  for (const choice of choices()) {
    const shape = (found[choice.key] || {})[choice.input.name];
    if (!shape) {
      throw new Error(`the manifest names signature '${choice.key}' with input '${choice.input.name}', which LiteRT.js `
                      + `does not find in ${state.info.file} (it has ${Object.keys(found).join(', ') || 'none'}): convert it again`);
    }
    if (shape.join('x') !== choice.input.shape.join('x')) {
      throw new Error(`signature '${choice.key}': LiteRT.js reads input shape [${shape}], the manifest says `
                      + `[${choice.input.shape}]: convert it again`);
    }
  }
}

function describeModel() {
  const m = state.manifest, s = m.sharing;
  const oneByOne = m.joint && !jointPreprocessing(m.tasks) ? ' (not used: the tasks preprocess differently)' : '';
  const joint = m.joint ? `, joint signature '${m.joint.signature_key}'${oneByOne}` : '';
  $('model').textContent = `${state.info.file}: ${state.info.bytes.toLocaleString()} bytes, ${m.tasks.length} tasks`
    + `${joint}, ${(100 * s.shared_fraction).toFixed(1)} % of parameters shared, quantization ${m.quantization}. `
    + `Compiled in ${state.loadMs.toFixed(0)} ms.`;
  for (const choice of choices()) $('task').append(el('option', choice.label, {value: choice.key}));
}

function drawGrey(canvas, grey, h, w) {
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(w, h);
  grey.forEach((v, i) => img.data.set([v, v, v, 255], 4 * i));
  ctx.putImageData(img, 0, 0);
}

function showSamples() {
  const [h, w] = state.samples.shape;
  state.samples.samples.forEach((sample, i) => {
    const grey = decodeBase64(sample.pixels);
    const button = el('button', undefined, {'type': 'button', 'class': 'sample', 'data-index': String(i),
                                           'aria-pressed': 'false', 'title': `${sample.label} (test image ${sample.index})`});
    const canvas = el('canvas');
    drawGrey(canvas, grey, h, w);
    button.append(canvas);
    button.addEventListener('click', () => pick({kind: 'sample', grey, h, w, name: `test image ${sample.index} (${sample.label})`, button}));
    $('samples').append(button);
  });
}

function pick(image) {
  for (const b of document.querySelectorAll('.sample')) b.setAttribute('aria-pressed', String(b === image.button));
  state.image = image;
  schedule(runCurrent);
}

/** One run at a time, in order; a failure is shown, never left uncaught. */
function schedule(job) {
  state.busy = state.busy.then(job).catch((e) => showError(String(e && e.message || e)));
  return state.busy;
}

/** The image as raw grey values (h x w): samples as stored, uploads drawn over black at the task's size. */
function greyFor(image, geo) {
  if (image.kind === 'sample') return {grey: image.grey, h: image.h, w: image.w};
  const h = geo.flat ? image.img.naturalHeight : geo.h, w = geo.flat ? image.img.naturalWidth : geo.w;
  const canvas = el('canvas');
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, w, h);
  ctx.drawImage(image.img, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const grey = new Uint8Array(w * h);
  for (let i = 0; i < grey.length; i++) {
    const v = Math.round(0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]);
    grey[i] = $('invert').checked ? 255 - v : v;
  }
  return {grey, h, w};
}

/** Each run's model input (the image fitted to its input, preprocessed its way) and the first one's preview. */
function inputsFor(choice) {
  let preview = null;
  const data = choice.runs.map((run) => {
    const geo = inputGeometry(run.input);
    const {grey, h, w} = greyFor(state.image, geo);
    preview = preview || {grey, h, w};
    return preprocess(fitGrey(grey, h, w, geo), run.preprocessing);
  });
  return {data, preview};
}

/** Every run of the choice in turn: {task: output} and the milliseconds of all of them together. */
async function runChoice(choice, data) {
  const byTask = {};
  let ms = 0;
  for (const [i, run] of choice.runs.entries()) {
    const result = await runSignature(state.model, run.key, run.input, data[i]);
    ms += result.ms;
    for (const task of run.tasks) byTask[task.name] = result.outputs[run.output(task)];
  }
  return {byTask, ms};
}

async function runCurrent() {
  if (!state.image) return;
  const choice = selected();
  const {data, preview} = inputsFor(choice);
  const {byTask, ms} = await runChoice(choice, data);
  showResult(choice, byTask, ms, preview);
}

function ranText(choice) {
  if (choice.runs.length === 1) return `signature '${choice.runs[0].key}'`;
  return `signatures ${choice.runs.map((r) => `'${r.key}'`).join(', ')} one by one (the tasks preprocess differently)`;
}

function topClasses(task, values) {
  const softmax = task.output.activation === 'softmax';
  let probs = Array.from(values);
  if (!softmax) {
    const top = Math.max(...probs), exps = probs.map((v) => Math.exp(v - top)), sum = exps.reduce((a, b) => a + b, 0);
    probs = exps.map((v) => v / sum);
  }
  return probs.map((p, i) => ({p, label: task.labels[i] ?? `class ${i}`})).sort((a, b) => b.p - a.p).slice(0, 3);
}

function showResult(choice, byTask, ms, preview) {
  const result = $('result');
  result.replaceChildren();
  const canvas = el('canvas');
  drawGrey(canvas, preview.grey, preview.h, preview.w);
  const these = choice.runs.length === 1 ? 'this inference' : `these ${choice.runs.length} inferences`;
  result.append(canvas, el('p', `${state.image.name}: ${ranText(choice)}, ${ms.toFixed(3)} ms for ${these}`,
                           {class: 'note', id: 'latency'}));
  for (const [name, values] of Object.entries(byTask)) {
    const task = state.manifest.tasks.find((t) => t.name === name);
    const box = el('div', undefined, {'class': 'task-result', 'data-task': name});
    const table = el('table');
    for (const {p, label} of topClasses(task, values)) {
      const row = el('tr');
      const bar = el('span', undefined, {class: 'bar', style: `width:${Math.round(80 * p)}px`});
      row.append(el('td', label), el('td', `${(100 * p).toFixed(1)} %`), el('td'));
      row.lastChild.append(bar);
      table.append(row);
    }
    box.append(el('h3', `task ${name}`), table);
    result.append(box);
  }
  state.runs += 1;
  result.dataset.signature = choice.key;
  result.dataset.ran = choice.runs.map((r) => r.key).join(' ');
  result.dataset.outputs = JSON.stringify(Object.fromEntries(Object.entries(byTask).map(([k, v]) => [k, Array.from(v)])));
  result.dataset.run = String(state.runs);
  $('time').disabled = false;
}

async function timeCurrent() {
  if (!state.image) return;
  const choice = selected();
  const {data} = inputsFor(choice);
  for (let i = 0; i < 10; i++) await runChoice(choice, data);
  const times = [];
  for (let i = 0; i < 100; i++) times.push((await runChoice(choice, data)).ms);
  const per = choice.runs.length === 1 ? 'per inference' : `per ${choice.runs.length} inferences`;
  $('timing').textContent = `${ranText(choice)}: median ${median(times).toFixed(3)} ms ${per} `
    + `(100 runs after 10 warm-up; min ${Math.min(...times).toFixed(3)} ms)`;
}

function onUpload(event) {
  const file = event.target.files[0];
  if (!file) return;
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => pick({kind: 'upload', img, name: file.name, button: null});
  img.onerror = () => showError(`${file.name} is not an image this browser can decode: pick a PNG or JPEG`);
  img.src = url;
}

async function start() {
  const runtime = initRuntime();   // the wasm loads while the manifest and the model are fetched
  runtime.catch(() => {});         // its failure is reported where it is awaited, not as unhandled
  state.info = await fetchJson('/manifest.json');
  if (state.info.error) throw new Error(state.info.error);
  state.manifest = state.info.manifest;
  state.samples = await fetchJson('/samples.json');
  const bytes = await fetchBytes('/model.tflite');
  await runtime;
  const t0 = performance.now();
  try {
    state.model = await compile(bytes);
  } catch (e) {
    throw new Error(`LiteRT.js could not load ${state.info.file} (${e && e.message || e}): convert it again`);
  }
  state.loadMs = performance.now() - t0;
  document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
  checkSignatures();
  describeModel();
  showSamples();
  $('task').addEventListener('change', () => schedule(runCurrent));
  $('upload').addEventListener('change', onUpload);
  $('invert').addEventListener('change', () => state.image && state.image.kind === 'upload' && schedule(runCurrent));
  $('time').addEventListener('click', () => schedule(timeCurrent));
  $('app').hidden = false;
  document.body.dataset.state = 'ready';
}

start().catch((e) => showError(String(e && e.message || e)));
