// The browser tests' harness: Debian's chromium, headless, driven by Playwright
// (playwright-core: no browser download), with a client certificate per user, JavaScript
// off for every flow, and every page the flows see checked again by axe-core.
//
// A user is a browser context with one client certificate for one node's origin and
// JavaScript disabled: everything a user does here works without script, by construction.
// Each page a user sees is recorded (address, status, headers, HTML, bytes loaded, any
// Content-Security-Policy violation). At the end, `audit()` shows each recorded page again in
// a context with JavaScript on (the same HTML, the node's own stylesheet) and runs axe-core
// on it: axe needs script, the console has none.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const AXE = fs.readFileSync(path.join(here, 'node_modules/axe-core/axe.min.js'), 'utf8');

/// Chromium's flags: headless on a machine with no network beyond loopback (without the
/// background-networking flags it keeps trying to reach Google's hosts).
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  '--disable-extensions',
];

/// The bound on any one navigation or action.
export const STEP_MS = 30_000;

/// A failed expectation: the message names the user, the page and what was wrong.
export class Failure extends Error {}

export function expect(condition, message) {
  if (!condition) throw new Failure(message);
}

/// The run: one browser, its users, the pages they saw.
export class Run {
  constructor(config) {
    this.config = config;
    this.pages = [];
    this.steps = [];
    this.facts = {};
  }

  async start() {
    this.browser = await chromium.launch({
      executablePath: this.config.chromium,
      headless: true,
      args: FLAGS,
    });
    return this;
  }

  /// A user: `client` (a name in the config's clients) in language `lang`, JavaScript off.
  async user(client, lang = 'en') {
    const c = this.config.clients[client];
    expect(c, `no client ${client} in the run's config`);
    const origin = this.config.nodes[c.node];
    const certificate = c.pfx
      ? { origin, pfxPath: c.pfx, passphrase: c.passphrase }
      : { origin, certPath: c.cert, keyPath: c.key };
    const context = await this.browser.newContext({
      javaScriptEnabled: false,
      clientCertificates: [certificate],
      // The node's server certificate is from the federation's development CA, which this
      // browser profile does not trust; the node checks the client's certificate.
      ignoreHTTPSErrors: true,
      locale: lang,
      extraHTTPHeaders: { 'accept-language': lang },
      viewport: { width: 1100, height: 800 },
    });
    context.setDefaultTimeout(STEP_MS);
    const page = await context.newPage();
    return new User(this, client, origin, lang, context, page);
  }

  /// Records one page a user saw.
  record(entry) {
    this.pages.push(entry);
  }

  /// Runs axe-core on every recorded page, in a context with JavaScript on, showing each
  /// page's own HTML under its own address with the node's own stylesheet as the flows
  /// loaded it: nothing reaches the network, so this context needs no certificate.
  async audit() {
    expect(this.stylesheet, 'no page loaded the console stylesheet');
    const context = await this.browser.newContext();
    context.setDefaultTimeout(STEP_MS);
    const seen = new Map();
    for (const entry of this.pages) {
      const key = entry.lang + '\u0000' + entry.html;
      if (seen.has(key)) {
        [entry.violations, entry.rulesPassed] = seen.get(key);
        continue;
      }
      const page = await context.newPage();
      const address = entry.url.split('#')[0];
      await page.route('**/*', (route) => {
        const url = route.request().url();
        if (url === address) {
          return route.fulfill({
            status: entry.status,
            contentType: 'text/html; charset=utf-8',
            headers: { 'content-security-policy': entry.csp_header },
            body: entry.html,
          });
        }
        if (new URL(url).pathname === '/console/style.css') {
          return route.fulfill({ contentType: 'text/css; charset=utf-8', body: this.stylesheet });
        }
        return route.abort();
      });
      await page.goto(address);
      await page.evaluate(AXE);
      const result = await page.evaluate(() =>
        // eslint-disable-next-line no-undef
        axe.run(document, { resultTypes: ['violations'] }),
      );
      entry.violations = result.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        targets: v.nodes.slice(0, 3).map((n) => n.target.join(' ')),
      }));
      entry.rulesPassed = result.passes.length;
      seen.set(key, [entry.violations, entry.rulesPassed]);
      await page.close();
    }
    await context.close();
  }

  /// What the run found, for the Rust test to check and print.
  report() {
    return {
      steps: this.steps,
      facts: this.facts,
      pages: this.pages.map((p) => ({
        client: p.client,
        lang: p.lang,
        path: new URL(p.url).pathname,
        status: p.status,
        bytes: p.bytes,
        javascript: p.javascript,
        csp_violations: p.csp,
        cache_control: p.cacheControl,
        violations: p.violations ?? null,
        rules_passed: p.rulesPassed ?? 0,
        case_data_shown: p.caseDataShown,
      })),
    };
  }

  async close() {
    await this.browser?.close();
  }
}

/// One person at a browser: one client certificate, one language, JavaScript off.
export class User {
  constructor(run, client, origin, lang, context, page) {
    Object.assign(this, { run, client, origin, lang, context, page });
    this.csp = [];
    this.bodies = [];
    page.on('console', (m) => {
      if (m.type() === 'error' && m.text().includes('Content Security Policy')) {
        this.csp.push(m.text());
      }
    });
    page.on('response', (response) => {
      // A redirect has no body: it counts nothing.
      const body = response.body();
      this.bodies.push(body.then((b) => b.length, () => 0));
      if (new URL(response.url()).pathname === '/console/style.css') {
        body.then((b) => (run.stylesheet = b.toString('utf8')), () => {});
      }
    });
  }

  /// Notes one step of the story, for the run's report.
  step(text) {
    this.run.steps.push(`${this.client} (${this.lang}): ${text}`);
  }

  /// Opens `pathname` on this user's node; answers the page's status. A console session
  /// starts on the first page a browser opens (and again after it was left idle): the user
  /// presses its one button and lands on the page asked for.
  async open(pathname) {
    const status = await this.settle(() => this.page.goto(this.origin + pathname));
    const start = this.page.locator('form[action="/console/session"] button');
    if (status === 401 && (await start.count()) === 1) {
      this.step(`starts a console session for ${pathname}`);
      return this.settle(async () => {
        const [response] = await Promise.all([
          this.page.waitForNavigation({ timeout: STEP_MS }),
          start.click(),
        ]);
        return response;
      });
    }
    return status;
  }

  /// Clicks the link or button with `name` (its accessible name); answers the new page's
  /// status.
  async click(role, name) {
    const target = this.page.getByRole(role, { name, exact: true });
    expect(
      (await target.count()) >= 1,
      `${this.client}: no ${role} named "${name}" on ${this.page.url()}`,
    );
    return this.settle(async () => {
      const [response] = await Promise.all([
        this.page.waitForNavigation({ timeout: STEP_MS }),
        target.first().click(),
      ]);
      return response;
    });
  }

  /// Fills the field labelled `label` with `value`.
  async fill(label, value) {
    await this.page.getByLabel(label, { exact: true }).fill(value);
  }

  /// Checks the checkbox or radio labelled `label`.
  async check(label) {
    await this.page.getByLabel(label, { exact: true }).check();
  }

  /// Chooses `option` in the select labelled `label`.
  async select(label, option) {
    await this.page.getByLabel(label, { exact: true }).selectOption(option);
  }

  /// Clicks the link `name` that downloads a file; saves it as `file` in the run's work
  /// folder and answers its path.
  async download(name, file) {
    const link = this.page.getByRole('link', { name, exact: true });
    expect((await link.count()) >= 1, `${this.client}: no link "${name}" on ${this.page.url()}`);
    const [download] = await Promise.all([this.page.waitForEvent('download'), link.first().click()]);
    const saved = path.join(this.run.config.workdir, file);
    await download.saveAs(saved);
    return saved;
  }

  /// Fills a form by its fields' names: `[name, value]` pairs; a checkbox or radio is
  /// checked at its value, a select chooses its value, any other field is typed into.
  async form(fields) {
    for (const [name, value] of fields) {
      const field = this.page.locator(`[name="${name}"]`);
      expect((await field.count()) >= 1, `${this.client}: no field ${name} on ${this.page.url()}`);
      const first = field.first();
      const type = (await first.getAttribute('type')) ?? '';
      if (type === 'checkbox' || type === 'radio') {
        await this.page.locator(`[name="${name}"][value="${value}"]`).check();
      } else if ((await this.page.locator(`select[name="${name}"]`).count()) >= 1) {
        await first.selectOption(value);
      } else {
        await first.fill(value);
      }
    }
  }

  /// Sets the file input labelled `label` to `file`.
  async upload(label, file) {
    await this.page.getByLabel(label, { exact: true }).setInputFiles(file);
  }

  /// Runs `navigate`, waits for the page, and records it; answers its status.
  async settle(navigate) {
    this.bodies = [];
    this.csp = [];
    const response = await navigate();
    await this.page.waitForLoadState('load');
    const bytes = (await Promise.all(this.bodies)).reduce((a, b) => a + b, 0);
    const status = response ? response.status() : 0;
    const headers = response ? await response.allHeaders() : {};
    const html = await this.page.content();
    const text = await this.page.locator('body').innerText();
    const hasScript = await this.page.locator('script').count();
    const secret = this.run.config.secrets ?? [];
    this.run.record({
      client: this.client,
      lang: this.lang,
      url: this.page.url(),
      status,
      html,
      bytes,
      javascript: hasScript > 0,
      csp: [...this.csp],
      cacheControl: headers['cache-control'] ?? '',
      csp_header: headers['content-security-policy'] ?? '',
      caseDataShown: secret.filter((s) => text.includes(s) || html.includes(s)),
    });
    this.lastText = text;
    return status;
  }

  /// Fails naming `what` unless the current page shows `snippet`.
  sees(snippet, what) {
    expect(
      this.text().includes(snippet),
      `${this.client}: ${what}: "${snippet}" is not on ${this.page.url()}, which says:\n${this.text().slice(0, 1500)}`,
    );
  }

  /// The visible text of the current page.
  text() {
    return this.lastText ?? '';
  }

  /// Reloads `pathname` until `ready(text)` holds, at most `attempts` times, `pause_ms`
  /// between attempts (the other node is delivering meanwhile); fails naming `what`.
  async until(pathname, ready, what, attempts = 100, pause_ms = 150) {
    for (let i = 0; i < attempts; i++) {
      await this.open(pathname);
      if (ready(this.text())) return;
      await new Promise((r) => setTimeout(r, pause_ms));
    }
    throw new Failure(`${this.client}: ${what} never showed on ${pathname}`);
  }

  /// A screenshot of the whole page to `file` (under the run's screenshot folder), if the
  /// run keeps screenshots.
  async screenshot(name) {
    const dir = this.run.config.screenshots;
    if (!dir) return;
    fs.mkdirSync(dir, { recursive: true });
    await this.page.screenshot({ path: path.join(dir, `${name}.png`), fullPage: true });
  }

  async close() {
    await this.context.close();
  }
}

/// Runs `story(run)` with the config file named on the command line; writes the report to
/// the config's `report` path; exits 1 with the failure's message on a failure.
export async function main(story) {
  const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const run = new Run(config);
  let failed = null;
  try {
    await run.start();
    await story(run);
    await run.audit();
  } catch (e) {
    failed = e;
  } finally {
    fs.writeFileSync(config.report, JSON.stringify(run.report(), null, 2));
    await run.close();
  }
  if (failed) {
    console.error(failed instanceof Failure ? failed.message : failed.stack);
    process.exit(1);
  }
}
