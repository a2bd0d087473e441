// Runs exported files in onnxruntime-node or onnxruntime-web (its wasm backend, under Node) for
// benchmarks/compat.py: the same JOB.json and output as compat_worker.py.
//
//   node compat_worker.js PACKAGE_DIR JOB.json
'use strict';
const fs = require('fs');
const path = require('path');

function loadOrt(dir) {
  // onnxruntime-web before 1.19 has no Node entry in package.json: its Node bundle is in dist/.
  for (const entry of [dir, path.join(dir, 'dist', 'ort.node.min.js')]) {
    try { return require(entry); } catch (e) { /* try the next */ }
  }
  throw new Error(`cannot load onnxruntime from ${dir}`);
}

function read(entry) {
  const buf = fs.readFileSync(entry.file);
  const data = entry.file.endsWith('.f32')
    ? new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4)
    : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  return { data, shape: entry.shape };
}

function firstLine(e) { return String(e && e.message || e).split('\n')[0].slice(0, 300); }

async function runModel(ort, model, inputs, outDir) {
  let session;
  // The file's bytes, not its path: onnxruntime-web before 1.16 reads a path as a URL under Node.
  try { session = await ort.InferenceSession.create(new Uint8Array(fs.readFileSync(model.path))); } catch (e) {
    return { loaded: false, error: 'load: ' + firstLine(e) };
  }
  const feeds = [];
  if (model.input === 'floats') {
    const [n, c, h, w] = inputs.floats.shape, size = c * h * w;
    for (let i = 0; i < n; i++) {
      feeds.push(new ort.Tensor('float32', inputs.floats.data.slice(i * size, (i + 1) * size), [1, c, h, w]));
    }
  } else {
    for (const img of inputs.images) feeds.push(new ort.Tensor('uint8', img.data, img.shape));
  }
  const rows = [];
  try {
    for (const x of feeds) {
      const out = await session.run({ [session.inputNames[0]]: x });
      rows.push(Float32Array.from(out[session.outputNames[0]].data));
    }
  } catch (e) { return { loaded: true, error: 'run: ' + firstLine(e) }; }
  const k = rows[0].length, all = new Float32Array(rows.length * k);
  rows.forEach((r, i) => all.set(r, i * k));
  const file = path.join(outDir, model.name + '.f32');
  fs.writeFileSync(file, Buffer.from(all.buffer));
  return { loaded: true, error: null, outputs: { file, shape: [rows.length, k] } };
}

async function main() {
  const [dir, jobFile] = process.argv.slice(2);
  const job = JSON.parse(fs.readFileSync(jobFile, 'utf8'));
  const ort = loadOrt(dir);
  if (ort.env && ort.env.wasm) ort.env.wasm.numThreads = 1;
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const inputs = { floats: read(job.inputs.floats), images: job.inputs.images.map(read) };
  const result = { runtime: pkg.name, version: pkg.version, probes: [], models: {} };
  for (const p of job.probes || []) {
    let ok = true;
    try { await ort.InferenceSession.create(new Uint8Array(fs.readFileSync(p.file))); } catch (e) { ok = false; }
    result.probes.push({ opset: p.opset, ir: p.ir, loaded: ok });
  }
  for (const m of job.models) result.models[m.name] = await runModel(ort, m, inputs, job.out);
  console.log(JSON.stringify(result));
}

main().catch((e) => { console.error(firstLine(e)); process.exit(1); });
