// The live status page (GET / on --metrics-port), in a real browser: Debian's chromium, headless, driven by
// playwright-core (no browser download: it runs the system's chromium). Asserts what a person sees: a service row
// appears when a worker registers, its queue depth moves under load, the charts draw. A screenshot is left in the
// temporary directory (printed as a diagnostic), not in the repository.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { startBroker } from './helpers.js';

const CHROMIUM = process.env.MDBROKER_CHROMIUM ?? '/usr/bin/chromium';
const HB = { heartbeatInterval: 200, heartbeatLiveness: 3 };
// CI installs chromium (MDBROKER_REQUIRE_BROWSER=1): there its absence fails this test instead of skipping it.
const NO_BROWSER = existsSync(CHROMIUM) || process.env.MDBROKER_REQUIRE_BROWSER === '1' ? false : `no ${CHROMIUM} (apt-get install chromium)`;

test('status page in chromium: a service row appears when a worker registers, its queue depth moves under load, charts draw', { skip: NO_BROWSER }, async (t) => {
  const { chromium } = await import('playwright-core');
  const { broker, endpoint } = await startBroker({ ...HB, metricsPort: 0, statsInterval: 0 });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const client = new Client({ endpoints: endpoint, timeout: 20000 });
  const workers: Worker[] = [];
  t.after(async () => {
    client.close();
    await Promise.all(workers.map((w) => w.close()));
    await browser.close();
    await broker.close();
  });
  const page = await browser.newPage({ viewport: { width: 1300, height: 900 } });
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  await page.goto(`http://127.0.0.1:${broker.metricsPort}/`);
  await page.locator('#health', { hasText: 'serving' }).waitFor({ timeout: 10000 });
  await page.locator('#services', { hasText: 'no services yet' }).waitFor({ timeout: 10000 });

  // A worker registers: its row appears with one idle worker.
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  workers.push(new Worker({ endpoint, service: 'slow', ...HB, handler: async (b) => {
    await gate;
    return b;
  } }));
  const row = page.locator('tr[data-service="slow"]');
  await row.locator('td.workers', { hasText: /^1$/ }).waitFor({ timeout: 10000 });

  // Load: 30 requests for a worker that holds them: the queue column shows them waiting, then draining.
  const replies = Promise.all(Array.from({ length: 30 }, (_, i) => client.request('slow', `r${i}`)));
  await page.waitForFunction(() => Number(document.querySelector('tr[data-service="slow"] td.queued')?.textContent) >= 20, undefined, { timeout: 10000 });
  const shot = join(mkdtempSync(join(tmpdir(), 'mdbroker-status-page-')), 'status-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  t.diagnostic(`screenshot: ${shot}`);
  release();
  await replies;
  await page.waitForFunction(() => document.querySelector('tr[data-service="slow"] td.queued')?.textContent === '0', undefined, { timeout: 10000 });

  // The charts are drawn (uPlot canvases, one per chart) from the library the broker served itself.
  assert.equal(await page.locator('.charts canvas').count() >= 3, true, 'three charts drawn');
  assert.match(await page.locator('#summary').innerText(), /1 service, 1 worker \(1 idle\), 0 queued/);
  assert.deepEqual(problems, [], 'no script errors in the page');
});
