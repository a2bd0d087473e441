// The browser runtime's page: loads one model with the page's own classify.js, then runs the
// float32 tensors the Python side sends (GET /__channel/job) and posts back the float32 logits
// and the milliseconds session.run took, timed here with performance.now().

import { ORT_VERSION, createSession, describeBackend, runTensor } from '../classify.js';

const params = new URLSearchParams(location.search);

async function post(path, body, headers = {}) {
  await fetch(path, { method: 'POST', body, headers });
}

async function fail(e) {
  await post('/__channel/error', String((e && e.message) || e));
}

addEventListener('unhandledrejection', (e) => fail(e.reason));

async function serve(session) {
  for (;;) {
    const r = await fetch('/__channel/job');
    if (r.status === 204) continue; // nothing yet: ask again
    if (r.headers.get('X-Stop')) return;
    const dims = r.headers.get('X-Shape').split(',').map(Number);
    const data = new Float32Array(await r.arrayBuffer());
    try {
      const out = await runTensor(session, data, dims);
      const logits = out.logits instanceof Float32Array ? out.logits : Float32Array.from(out.logits);
      await post('/__channel/result', logits, { 'X-Shape': out.dims.join(','), 'X-Ms': String(out.ms) });
    } catch (e) {
      await fail(e);
    }
  }
}

async function main() {
  const url = new URL(params.get('model'), `${location.origin}/`);
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url.pathname} could not be loaded (HTTP ${response.status})`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  const threads = Number.parseInt(params.get('threads') || '', 10) || undefined;
  const { session, backend } = await createSession(bytes, { backend: params.get('backend') || 'wasm', threads });
  await post('/__channel/ready', JSON.stringify({
    ort: ORT_VERSION, backend: backend.name, description: describeBackend(backend), threads: backend.threads,
    isolated: self.crossOriginIsolated, input: session.inputMetadata?.[0]?.type ?? 'float32',
    browser: navigator.userAgent,
  }));
  await serve(session);
}

main().catch(fail);
