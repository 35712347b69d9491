// Shared pieces of the browser journeys: the server's address and the demo tokens (from the
// environment scripts/browser-test.sh sets), Chromium, signing in by typing a token, the JSON
// API with a bearer token (to check what the pages did, never to do it), screenshots.
import { readFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const BASE_URL = (process.env.BASE_URL || '').replace(/\/$/, '');
if (!BASE_URL) throw new Error('BASE_URL is not set (run scripts/browser-test.sh)');
const TOKENS_FILE = process.env.TOKENS_FILE;
if (!TOKENS_FILE) throw new Error('TOKENS_FILE is not set (run scripts/browser-test.sh)');
export const SHOTS = resolve(process.env.SCREENSHOTS_DIR || 'target/browser');
mkdirSync(SHOTS, { recursive: true });

// A UUID as the app writes it in paths.
export const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
export const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
// A path of this server, matched exactly (query allowed).
export const at = (path) => new RegExp(`^${escapeRe(BASE_URL)}${path}(\\?.*)?$`);

/** `user token` lines of the demo tokens file. */
function readTokens() {
  const tokens = new Map();
  for (const line of readFileSync(TOKENS_FILE, 'utf8').split('\n')) {
    const [user, token] = line.trim().split(/\s+/);
    if (user && token) tokens.set(user, token);
  }
  return tokens;
}
const TOKENS = readTokens();
export function token(user) {
  const t = TOKENS.get(user);
  if (!t) throw new Error(`no demo token for ${user} in ${TOKENS_FILE}`);
  return t;
}

/** A word unique to this run, so journeys never pick up each other's instances. */
export const RUN = Date.now().toString(36);

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * A browser context of its own for `user`, signed in by typing their token on /sign-in.
 * Every page's dialogs are recorded in `dialogs` (and dismissed), so a script that runs
 * where it must not is seen.
 */
export async function signIn(browser, user, { viewport = { width: 1280, height: 900 }, shot } = {}) {
  const context = await browser.newContext({ baseURL: BASE_URL, viewport, acceptDownloads: true });
  context.setDefaultTimeout(15_000);
  context.setDefaultNavigationTimeout(15_000);
  const dialogs = [];
  context.on('page', (p) => watchDialogs(p, dialogs));
  const page = await context.newPage();
  await page.goto('/sign-in');
  await page.getByLabel('API token').fill(token(user));
  if (shot) await screenshot(page, shot);
  await Promise.all([
    page.waitForURL(at('/tasks')),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);
  return { context, page, dialogs, user };
}

function watchDialogs(page, dialogs) {
  page.on('dialog', async (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    await d.dismiss().catch(() => {});
  });
}

/** Full-page PNG in target/browser. */
export async function screenshot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/**
 * Clicks `locator` (a submit button) and waits for the POST it sends and the page it leads
 * to: returns the answer to the POST (its status before any redirect is followed).
 */
export async function submit(page, locator, pathPattern) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && (!pathPattern || pathPattern.test(new URL(r.url()).pathname))),
    locator.click(),
  ]);
  await page.waitForLoadState('load');
  return response;
}

/** The JSON API as `user` (bearer token): `[status, body]`. */
export async function api(user, method, path, body) {
  const headers = { Authorization: `Bearer ${token(user)}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(BASE_URL + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    redirect: 'manual',
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return [res.status, json ?? text];
}

/** GET an API resource that must answer 200. */
export async function apiGet(user, path) {
  const [status, body] = await api(user, 'GET', path);
  assert.equal(status, 200, `GET ${path} as ${user}: ${status} ${JSON.stringify(body)}`);
  return body;
}

/** The open tasks of an instance (read as the auditor, who reads everything). */
export async function openTasks(instance) {
  const inst = await apiGet('jiang.audit', `/v1/instances/${instance}`);
  return inst.tasks;
}

/** The id of the one open task at `step` of `instance`. */
export async function taskAt(instance, step) {
  const tasks = (await openTasks(instance)).filter((t) => t.step === step);
  assert.equal(tasks.length, 1, `one open task at ${step} of ${instance}, found ${JSON.stringify(tasks)}`);
  return tasks[0].id;
}

/** The id in a path like /instances/ID. */
export function idIn(url, prefix) {
  const m = new URL(url).pathname.match(new RegExp(`^${prefix}/(${UUID})$`));
  assert.ok(m, `${url} is ${prefix}/<uuid>`);
  return m[1];
}

/** The `_csrf` value of the current page's first form. */
export async function csrfOf(page) {
  const v = await page.locator('input[type=hidden][name=_csrf]').first().getAttribute('value');
  assert.ok(v, 'the page has a form with a _csrf value');
  return v;
}

/**
 * Runs `body` and, when it throws, keeps a screenshot of every page still open in the given
 * contexts (target/browser/FAILED-…), so a failure can be seen.
 */
export async function keepEvidence(name, contexts, body) {
  try {
    await body();
  } catch (e) {
    let n = 0;
    for (const c of contexts()) {
      for (const p of c.pages()) {
        n += 1;
        await p.screenshot({ path: join(SHOTS, `FAILED-${name}-${n}.png`), fullPage: true }).catch(() => {});
      }
    }
    throw e;
  }
}
