// Loading a tlexport model into onnxruntime-web and classifying images with it. No DOM beyond an
// OffscreenCanvas to read decoded pixels: the page (app.js) and tlexport's browser runtime both
// use it.

import * as ort from './ort/ort.min.mjs';
import { readMetadata } from './onnxmeta.js';
import { rgbFromRgba, toTensor } from './preprocess.js';

export const ORT_VERSION = ort.env.versions?.web ?? 'unknown';
ort.env.logLevel = 'error'; // its warnings (nodes left to the CPU under WebGPU) are not the user's business
const INTERPOLATIONS = ['nearest', 'bilinear', 'bicubic'];

// WebGPU on a hardware adapter, wasm otherwise ('auto'); or exactly what is asked for.
export async function chooseBackend(asked = 'auto') {
  if (asked === 'wasm') return { name: 'wasm' };
  let adapter = null;
  if (navigator.gpu) adapter = await navigator.gpu.requestAdapter().catch(() => null);
  const fallback = Boolean(adapter && (adapter.info?.isFallbackAdapter ?? adapter.isFallbackAdapter));
  const gpu = adapter ? { name: 'webgpu', adapter: adapter.info?.architecture || adapter.info?.vendor || '', fallback } : null;
  if (asked === 'webgpu') {
    if (!gpu) throw new Error('WebGPU was asked for, but this browser offers no WebGPU adapter');
    return gpu;
  }
  return gpu && !fallback ? gpu : { name: 'wasm' };
}

function wasmThreads(threads) {
  if (!self.crossOriginIsolated) return 1; // threads need SharedArrayBuffer
  return threads || Math.min(4, navigator.hardwareConcurrency || 1);
}

// What ran, in words: "wasm · SIMD · 2 threads" or "WebGPU (swiftshader, software adapter)".
export function describeBackend(b) {
  if (b.name === 'webgpu') {
    const what = [b.adapter, b.fallback ? 'software adapter' : ''].filter(Boolean).join(', ');
    return `WebGPU${what ? ` (${what})` : ''}`;
  }
  const why = self.crossOriginIsolated ? '' : ' (not cross-origin isolated)';
  return `wasm · SIMD · ${b.threads} thread${b.threads === 1 ? '' : 's'}${why}`;
}

// An onnxruntime-web session of the model bytes on the chosen backend (WebGPU that fails to
// take the model falls back to wasm when the choice was 'auto').
export async function createSession(bytes, { backend = 'auto', threads } = {}) {
  const chosen = await chooseBackend(backend);
  ort.env.wasm.numThreads = wasmThreads(threads);
  const create = (ep) => ort.InferenceSession.create(bytes, { executionProviders: [ep], graphOptimizationLevel: 'all', logSeverityLevel: 3 });
  try {
    const session = await create(chosen.name);
    return { session, backend: { ...chosen, threads: ort.env.wasm.numThreads } };
  } catch (e) {
    if (backend !== 'auto' || chosen.name === 'wasm') throw e;
    const session = await create('wasm');
    return { session, backend: { name: 'wasm', threads: ort.env.wasm.numThreads, note: `WebGPU failed: ${e.message}` } };
  }
}

// One call of the session on a tensor: its first output and the milliseconds session.run took.
export async function runTensor(session, data, dims, type = 'float32') {
  const feeds = { [session.inputNames[0]]: new ort.Tensor(type, data, dims) };
  const outputs = session.outputNames;
  const t0 = performance.now();
  const out = await session.run(feeds);
  const ms = performance.now() - t0;
  const pick = (name) => (outputs.includes(name) ? out[name] : null);
  const logits = pick('logits') || out[outputs[0]];
  const probabilities = pick('probabilities');
  return { logits: logits.data, dims: logits.dims, probabilities: probabilities?.data ?? null, ms };
}

function checkPreprocess(p) {
  const positive = (v) => Number.isInteger(v) && v > 0;
  const triple = (v, min) => Array.isArray(v) && v.length === 3 && v.every((x) => Number.isFinite(x) && x >= min);
  if (!p || !positive(p.resize) || !positive(p.crop) || p.crop > p.resize || !triple(p.mean, -Infinity)
      || !triple(p.std, 1e-8) || !INTERPOLATIONS.includes(p.interpolation)) {
    throw new Error('the model carries no usable preprocessing (tlexport.preprocess)');
  }
  return p;
}

async function fetchOk(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url} could not be loaded (HTTP ${r.status})`);
  return r;
}

// The model named by config.json (next to the page), its labels, its preprocessing and a session.
// A model whose input is uint8 takes decoded RGB pixels [H, W, 3] and preprocesses inside its
// graph; a float32 one takes [1, 3, crop, crop], preprocessed here from its embedded metadata.
export async function loadClassifier(base, options = {}) {
  const config = await (await fetchOk(new URL('config.json', base))).json();
  const labels = await (await fetchOk(new URL(config.labels, base))).json();
  if (!Array.isArray(labels) || !labels.every((x) => typeof x === 'string')) throw new Error(`${config.labels} is not a list of names`);
  const bytes = new Uint8Array(await (await fetchOk(new URL(config.model, base))).arrayBuffer());
  const meta = readMetadata(bytes);
  const { session, backend } = await createSession(bytes, options);
  const input = session.inputMetadata?.[0];
  const pixels = input?.type === 'uint8';
  const preprocess = pixels ? null : checkPreprocess(JSON.parse(meta['tlexport.preprocess'] || 'null'));
  const pillow = Number.parseInt(String(config.pillow || '13'), 10) || 13; // whose resize to follow
  return { session, backend, labels, preprocess, pixels, pillow, arch: meta['tlexport.arch'] || '', model: config.model };
}

// Decoded pixels of an image file (EXIF orientation applied, colour profile ignored: as Pillow
// reads it) or of anything createImageBitmap takes (a video frame).
export async function decode(source) {
  const options = { imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none' };
  return createImageBitmap(source, options);
}

export function rgbaOf(bitmap) {
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(bitmap, 0, 0);
  return { rgba: ctx.getImageData(0, 0, width, height).data, width, height };
}

function softmax(logits) {
  const max = logits.reduce((a, b) => (b > a ? b : a), -Infinity); // no spread: K may be large
  const exp = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exp.reduce((a, b) => a + b, 0);
  return exp.map((v) => v / sum);
}

// One image as the float32 feed: [1, 3, crop, crop], or repeated to the batch a graph exported
// with a fixed batch size insists on.
function nchw(model, tensor) {
  const first = model.session.inputMetadata?.[0]?.shape?.[0];
  const batch = Number.isInteger(first) && first > 1 ? first : 1;
  let data = tensor;
  if (batch > 1) {
    data = new Float32Array(tensor.length * batch);
    for (let i = 0; i < batch; i++) data.set(tensor, i * tensor.length);
  }
  return [data, [batch, 3, model.preprocess.crop, model.preprocess.crop], 'float32'];
}

// Classify a decoded image: the k most probable labels and where the time went.
export async function classify(model, bitmap, k = 5) {
  const t0 = performance.now();
  const { rgba, width, height } = rgbaOf(bitmap);
  const rgb = rgbFromRgba(rgba);
  const feed = model.pixels ? [rgb, [height, width, 3], 'uint8'] : nchw(model, toTensor(rgb, width, height, model.preprocess, model.pillow));
  const t1 = performance.now();
  const out = await runTensor(model.session, ...feed);
  const classes = out.logits.length / (out.dims[0] || 1); // a fixed-batch graph answers for every copy
  const probs = out.probabilities ? Array.from(out.probabilities.subarray(0, classes))
    : softmax(out.logits.subarray(0, classes));
  if (probs.length !== model.labels.length) {
    throw new Error(`the model has ${probs.length} outputs but labels.json names ${model.labels.length} classes`);
  }
  const top = probs.map((p, index) => ({ index, label: model.labels[index], probability: p }))
    .sort((a, b) => b.probability - a.probability).slice(0, k);
  return { top, preprocessMs: t1 - t0, inferenceMs: out.ms, totalMs: performance.now() - t0, width, height };
}
