// Drives the system's Chromium for the Python tests: one browser for the whole session, commands
// as JSON lines on stdin, one JSON line answered on stdout per command. Never downloads a browser:
// playwright-core only launches the binary it is given.
//
//   node driver.mjs '{"executable": "/usr/bin/chromium", "args": [...], "profile": "/tmp/x"}'
//
// Commands: open {url, camera}, files {paths}, drop {path}, capture {}, screenshot {path, selector},
// state {}, close {}. Every answer is {"ok": true, ...} or {"ok": false, "error": "..."}.

import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const options = JSON.parse(process.argv[2]);
const TIMEOUT = options.timeout_ms ?? 120000;
const camera = ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'];
const context = await chromium.launchPersistentContext(options.profile, {
  executablePath: options.executable,
  headless: true,
  args: [...options.args, ...camera],
  viewport: { width: 1000, height: 720 },
  deviceScaleFactor: 1,
});
let page = null;
let log = { dialogs: [], errors: [], violations: [] };

async function open({ url }) {
  if (page) await page.close();
  log = { dialogs: [], errors: [], violations: [] };
  page = await context.newPage();
  page.on('dialog', async (d) => { log.dialogs.push(d.message()); await d.dismiss(); });
  page.on('pageerror', (e) => log.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') log.errors.push(m.text()); });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__violations = window.__violations || [];
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  await page.goto(url);
  await page.waitForFunction(() => document.body && document.body.dataset.state !== 'loading', null, { timeout: TIMEOUT });
  return state();
}

async function state() {
  const s = await page.evaluate(() => ({
    state: document.body.dataset.state,
    status: document.getElementById('status')?.textContent ?? '',
    backend: document.getElementById('backend')?.dataset.backend ?? '',
    backendText: document.getElementById('backend')?.textContent ?? '',
    isolated: self.crossOriginIsolated,
    cores: navigator.hardwareConcurrency,
    violations: window.__violations || [],
  }));
  return { ...s, dialogs: log.dialogs, errors: log.errors };
}

// Every result card, oldest first, as the page shows it.
function results() {
  return page.evaluate(() => [...document.querySelectorAll('#results .result')].reverse().map((li) => ({
    name: li.dataset.name,
    state: li.dataset.state,
    ms: Number(li.dataset.ms),
    note: li.querySelector('.note')?.textContent ?? '',
    latency: li.querySelector('.latency')?.textContent ?? '',
    top: [...li.querySelectorAll('.top .class')].map((row) => ({
      label: row.dataset.label,
      index: Number(row.dataset.index),
      probability: Number(row.dataset.probability),
      text: row.querySelector('.label').textContent,
      html: row.querySelector('.label').innerHTML,
      children: row.querySelector('.label').children.length,
    })),
  })));
}

async function settle(expected) {
  await page.waitForFunction((n) => {
    const cards = [...document.querySelectorAll('#results .result')];
    return cards.length >= n && cards.every((c) => c.dataset.state !== 'pending');
  }, expected, { timeout: TIMEOUT, polling: 50 });
  return { results: await results(), ...(await state()) };
}

async function files({ paths }) {
  const before = await page.locator('#results .result').count();
  await page.setInputFiles('#files', paths);
  return settle(before + paths.length);
}

async function drop({ path, type }) {
  const before = await page.locator('#results .result').count();
  const bytes = readFileSync(path).toString('base64');
  const dataTransfer = await page.evaluateHandle(({ b64, name, mime }) => {
    const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([raw], name, { type: mime }));
    return dt;
  }, { b64: bytes, name: basename(path), mime: type || 'image/png' });
  await page.dispatchEvent('#drop', 'drop', { dataTransfer });
  return settle(before + 1);
}

async function capture() {
  const before = await page.locator('#results .result').count();
  await page.click('#camera-start');
  await page.waitForFunction(() => !document.getElementById('capture').disabled
    && document.getElementById('video').readyState >= 2, null, { timeout: TIMEOUT });
  await page.click('#capture');
  return settle(before + 1);
}

async function screenshot({ path, selector }) {
  await (selector ? page.locator(selector).screenshot({ path }) : page.screenshot({ path, fullPage: true }));
  return {};
}

const commands = { open, files, drop, capture, screenshot, state, results: async () => ({ results: await results() }) };
const lines = createInterface({ input: process.stdin });
process.stdout.write(`${JSON.stringify({ ok: true, ready: true })}\n`);
for await (const line of lines) {
  if (!line.trim()) continue;
  const { cmd, ...args } = JSON.parse(line);
  if (cmd === 'close') break;
  let answer;
  try {
    answer = { ok: true, ...(await commands[cmd](args)) };
  } catch (e) {
    answer = { ok: false, error: String((e && e.message) || e).split('\n')[0] };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
// Closing can wait on the fake camera's stream: give it a few seconds, then leave anyway (the
// browser is playwright's child and ends with it).
await Promise.race([context.close(), new Promise((done) => setTimeout(done, 5000))]);
process.exit(0);
