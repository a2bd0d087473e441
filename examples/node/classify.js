#!/usr/bin/env node
// Classify image files with a tlexport model whose preprocessing is inside the graph
// (model.uint8.onnx from `tlexport export RUN --bake-preprocess`), in Node.js with onnxruntime-node.
//
//   node classify.js MODEL.uint8.onnx IMAGE_OR_FOLDER... [--top-k 5] [--json]
//
// The app only decodes each file to RGB pixels (decode.js, the way tlexport decodes them) and
// hands them over as uint8 [H, W, 3]: resize, crop and normalisation happen in the graph, so they
// cannot drift from training. The class names come from the model's own metadata. --json prints
// what `tlexport predict --json` prints. Exit status: 0, 1 when some files could not be read
// (named on stderr), 2 for bad usage.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');
const { decode } = require('./decode');

const EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff']); // tlexport's

// ---- the model's metadata: ModelProto.metadata_props (field 14), read from the protobuf ----------
function varint(buf, at) {
  let value = 0, shift = 0, byte;
  do {
    byte = buf[at.pos++];
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
  } while (byte & 0x80);
  return value;
}

function fields(buf, start, end, visit) {
  const at = { pos: start };
  while (at.pos < end) {
    const key = varint(buf, at), field = Math.floor(key / 8), wire = key % 8;
    if (wire === 0) varint(buf, at);
    else if (wire === 1) at.pos += 8;
    else if (wire === 5) at.pos += 4;
    else if (wire === 2) {
      const len = varint(buf, at);
      visit(field, at.pos, at.pos + len);
      at.pos += len;
    } else throw new Error(`unexpected protobuf wire type ${wire}`);
  }
}

function metadata(modelPath) {
  const buf = fs.readFileSync(modelPath), props = {};
  fields(buf, 0, buf.length, (field, s, e) => {
    if (field !== 14) return;
    let key = '', value = '';
    fields(buf, s, e, (f, a, b) => {
      if (f === 1) key = buf.toString('utf8', a, b);
      if (f === 2) value = buf.toString('utf8', a, b);
    });
    props[key] = value;
  });
  if (!props['tlexport.classes']) throw new Error(`${modelPath} carries no tlexport metadata (export it with tlexport)`);
  if (props['tlexport.in_graph_preprocess'] !== 'true') {
    throw new Error(`${modelPath} does not take decoded images: use model.uint8.onnx (tlexport export --bake-preprocess)`);
  }
  return { classes: JSON.parse(props['tlexport.classes']) };
}

// ---- files ---------------------------------------------------------------------------------------
function imageFiles(paths) {
  const out = [];
  const walk = (dir) => {
    for (const name of fs.readdirSync(dir).sort()) {
      if (name.startsWith('.')) continue;
      const p = path.join(dir, name);
      if (fs.statSync(p).isDirectory()) walk(p);
      else if (EXTENSIONS.has(path.extname(name).toLowerCase())) out.push(p);
    }
  };
  for (const p of paths) {
    if (fs.existsSync(p) && fs.statSync(p).isDirectory()) walk(p);
    else out.push(p);
  }
  return out;
}

function topK(probs, classes, k) {
  const order = [...probs.keys()].sort((a, b) => probs[b] - probs[a] || a - b).slice(0, k);
  return order.map((i) => ({ label: classes[i], index: i, prob: probs[i] }));
}

function parseArgs(argv) {
  const args = { topK: 5, json: false, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--json') args.json = true;
    else if (argv[i] === '--top-k') args.topK = Number(argv[++i]);
    else args.rest.push(argv[i]);
  }
  if (args.rest.length < 2 || !(args.topK >= 1)) {
    throw Object.assign(new Error('usage: node classify.js MODEL.uint8.onnx IMAGE_OR_FOLDER... [--top-k N] [--json]'),
      { exitCode: 2 });
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const [model, ...images] = args.rest;
  const { classes } = metadata(model);
  const session = await ort.InferenceSession.create(model);
  const results = [], errors = [];
  for (const file of imageFiles(images)) {
    let img;
    try { img = decode(file); } catch (e) { errors.push(`cannot read ${file}: ${e.message}`); continue; }
    const out = await session.run({ image: new ort.Tensor('uint8', img.data, [img.height, img.width, 3]) });
    results.push({ image: file, top: topK(Array.from(out.probabilities.data), classes, Math.min(args.topK, classes.length)) });
  }
  if (args.json) console.log(JSON.stringify(results, null, 2));
  else for (const r of results) {
    console.log(`${r.image}: ${r.top.map((t) => `${t.label} ${t.prob.toFixed(3)}`).join(', ')}`);
  }
  for (const e of errors) console.error(e);
  return errors.length ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => {
  console.error(`Error: ${e.message.split('\n')[0]}`);
  process.exit(e.exitCode || 1);
});
