// The page: pick, drop or photograph images and see the model's top-k classes, their
// probabilities and how long each call took. Every text from the model or the user (class names,
// file names, errors) goes into the page through textContent, never as HTML.

import { ORT_VERSION, classify, decode, describeBackend, loadClassifier } from './classify.js';

const params = new URLSearchParams(location.search);
const TOP_K = Math.max(1, Number.parseInt(params.get('k') || '5', 10) || 5);
const $ = (id) => document.getElementById(id);
let model = null;
let queue = Promise.resolve(); // one image at a time, so each latency is its own

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(state, text) {
  document.body.dataset.state = state;
  $('status').textContent = text;
}

function card(name) {
  const item = el('li', 'result');
  item.dataset.state = 'pending';
  item.dataset.name = name;
  const thumb = el('canvas', 'thumb');
  const body = el('div', 'body');
  body.append(el('p', 'name', name), el('p', 'note', 'classifying…'));
  item.append(thumb, body);
  $('results').prepend(item);
  return item;
}

function drawThumb(canvas, bitmap) {
  const scale = Math.min(1, 160 / Math.max(bitmap.width, bitmap.height));
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
}

function showResult(item, result, decodeMs) {
  const body = item.querySelector('.body');
  body.querySelector('.note').remove();
  const list = el('ol', 'top');
  for (const c of result.top) {
    const row = el('li', 'class');
    row.dataset.label = c.label;
    row.dataset.index = String(c.index);
    row.dataset.probability = String(c.probability);
    const bar = el('meter', 'bar');
    bar.min = 0;
    bar.max = 1;
    bar.value = c.probability;
    row.append(el('span', 'label', c.label), bar, el('span', 'prob', `${(100 * c.probability).toFixed(1)}%`));
    list.append(row);
  }
  const ms = (v) => `${v.toFixed(1)} ms`;
  const latency = el('p', 'latency', `inference ${ms(result.inferenceMs)} · preprocessing ${ms(result.preprocessMs)} · decoding ${ms(decodeMs)}`);
  body.append(list, latency);
  item.dataset.ms = String(result.inferenceMs);
  item.dataset.state = 'done';
}

function showError(item, error) {
  const note = item.querySelector('.note');
  note.textContent = `could not classify: ${error.message || error}`;
  note.classList.add('error');
  item.dataset.state = 'error';
}

function enqueue(name, source) {
  const item = card(name);
  queue = queue.then(async () => {
    try {
      if (!model) throw new Error('the model is not loaded');
      const t0 = performance.now();
      const bitmap = await decode(source);
      const decodeMs = performance.now() - t0;
      drawThumb(item.querySelector('.thumb'), bitmap);
      const result = await classify(model, bitmap, TOP_K);
      bitmap.close();
      showResult(item, result, decodeMs);
    } catch (e) {
      showError(item, e);
    }
  });
}

function addFiles(files) {
  for (const file of files) enqueue(file.name, file);
}

function wireInputs() {
  const input = $('files');
  input.addEventListener('change', () => {
    addFiles(input.files);
    input.value = '';
  });
  const drop = $('drop');
  for (const type of ['dragenter', 'dragover']) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add('over');
    });
  }
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    addFiles([...e.dataTransfer.files].filter((f) => f.type.startsWith('image/') || f.type === ''));
  });
  $('camera-start').addEventListener('click', startCamera);
  $('capture').addEventListener('click', () => enqueue(`camera ${new Date().toLocaleTimeString()}`, $('video')));
}

async function startCamera() {
  const video = $('video');
  if (!navigator.mediaDevices?.getUserMedia) {
    $('camera-note').textContent = 'This browser offers no camera here (it needs https or localhost).';
    return;
  }
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
    await video.play();
    video.hidden = false;
    $('capture').disabled = false;
    $('camera-start').disabled = true;
    $('camera-note').textContent = '';
  } catch (e) {
    $('camera-note').textContent = `No camera: ${e.message || e}`;
  }
}

async function main() {
  wireInputs();
  try {
    model = await loadClassifier(new URL('.', location.href), { backend: params.get('backend') || 'auto' });
    const backend = describeBackend(model.backend);
    $('backend').textContent = `onnxruntime-web ${ORT_VERSION} · ${backend}${model.backend.note ? ` (${model.backend.note})` : ''}`;
    $('backend').dataset.backend = model.backend.name;
    $('model').textContent = `${model.arch || 'model'} · ${model.labels.length} classes · ${model.model}`;
    setStatus('ready', 'Ready: choose, drop or photograph an image.');
  } catch (e) {
    setStatus('error', `The model could not be loaded: ${e.message || e}`);
  }
}

main();
