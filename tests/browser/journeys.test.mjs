// The web app's journeys, end to end in Chromium: people sign in by typing their token, click
// through the pages and submit the forms. The JSON API (bearer token) checks what a page did or
// did not change, and sets the scene only where the scene is not the point. Each journey makes
// its own instances, so they run against one server in any order, but for the last ones: the
// clock journey, which moves due times, and after it the change journeys (13–15), which deploy
// a new version of complaint-handling and migrate every running instance of version 2 to it.
// Run by scripts/browser-test.sh (see README.md).
//
// Nothing here sleeps: every step waits for the navigation, response or element it needs.
// The server runs on a manual clock, so due times never move under a test.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import {
  BASE_URL, RUN, UUID, at, launch, signIn, screenshot, submit, api, apiGet, taskAt, idIn,
  csrfOf, keepEvidence, escapeRe, token, SHOTS,
} from './helpers.mjs';

let browser;
const contexts = [];
async function as(user, opts) {
  const s = await signIn(browser, user, opts);
  contexts.push(s.context);
  return s;
}
// The contexts opened from now on (those of one journey, for its failure screenshots).
const live = () => { const n = contexts.length; return () => contexts.slice(n); };

before(async () => {
  browser = await launch();
});
after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
});

const exact = { exact: true };
// A field by its label's text, exactly, allowing the required marker (" *") after it: the
// marker is aria-hidden, so it is no part of the accessible name, but Playwright's getByLabel
// matches the label's whole text.
const lbl = (text) => new RegExp(`^\\s*${escapeRe(text)}(\\s*\\*)?\\s*$`);
const status = (page) => page.getByRole('status');

/** Text of the flash message after an action (there must be one). */
async function flash(page) {
  const s = status(page);
  await s.first().waitFor();
  return (await s.first().textContent()).trim();
}

/** Starts `procedure` from /start by its title, fills `fields` (label → value), returns the instance id. */
async function startFromUi(page, procTitle, procId, fields) {
  await page.getByRole('navigation').getByRole('link', { name: 'Start', exact: true }).click();
  await page.waitForURL(at('/start'));
  const link = page.getByRole('link', { name: procTitle, exact: true });
  assert.equal(await link.getAttribute('href'), `/start/${procId}`);
  await link.click();
  await page.waitForURL(at(`/start/${procId}`));
  for (const [label, value] of Object.entries(fields)) {
    const input = page.getByLabel(lbl(label));
    const tag = await input.evaluate((e) => e.tagName.toLowerCase());
    if (tag === 'select') await input.selectOption(value);
    else await input.fill(value);
  }
  await Promise.all([
    page.waitForURL(new RegExp(`/instances/${UUID}$`)),
    page.getByRole('button', { name: 'Start', exact: true }).click(),
  ]);
  assert.match(await flash(page), /start/i, 'a status message says it started');
  return idIn(page.url(), '/instances');
}

/** The row of `task` in the worklist (navigating there through the nav). */
async function worklistRow(page, task) {
  await page.getByRole('navigation').getByRole('link', { name: 'My work', exact: true }).click();
  await page.waitForURL(at('/tasks'));
  const row = page.locator(`tr[data-task="${task}"]`);
  await row.waitFor();
  return row;
}

/** Opens `task` from its worklist row by the link named after the step. */
async function openFromWorklist(page, task, stepTitle) {
  const row = await worklistRow(page, task);
  const link = row.getByRole('link', { name: stepTitle, exact: true });
  assert.equal(await link.getAttribute('href'), `/tasks/${task}`);
  await link.click();
  await page.waitForURL(at(`/tasks/${task}`));
  assert.equal((await page.locator('h1').textContent()).trim(), stepTitle);
  return row;
}

/** Clicks an outcome button and expects to land on /tasks with a status message. */
async function completeWith(page, outcome) {
  await Promise.all([
    page.waitForURL(at('/tasks')),
    page.getByRole('button', { name: outcome, exact: true }).click(),
  ]);
  return flash(page);
}

/** RFC 4180 CSV: rows of fields (quoted fields may hold commas, quotes and newlines). */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i += 1; } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i += 1;
      row.push(field); rows.push(row); row = []; field = '';
    } else field += c;
  }
  if (field || row.length) { row.push(field); rows.push(row); }
  return rows;
}

/** Every state-changing form of the page carries the session's `_csrf`. */
async function assertCsrfEverywhere(page) {
  const forms = await page.locator('form').evaluateAll((fs) => fs.map((f) => ({
    action: f.getAttribute('action'),
    method: (f.getAttribute('method') || 'get').toLowerCase(),
    csrf: f.querySelector('input[type=hidden][name=_csrf]')?.value ?? '',
  })));
  const posts = forms.filter((f) => f.method === 'post');
  assert.ok(posts.length > 0, `${page.url()} has a form that posts`);
  for (const f of posts) assert.ok(f.csrf.length >= 16, `the form posting to ${f.action} on ${page.url()} carries _csrf`);
}

const instanceOf = (id) => apiGet('jiang.audit', `/v1/instances/${id}`);
const historyOf = async (id) => (await apiGet('jiang.audit', `/v1/instances/${id}/history?limit=1000`)).events;

// -------------------------------------------------------------------------------------------
test('1. a complaint from registration to closure by three people', async () => {
  await keepEvidence('journey1', live(), async () => {
    const customer = `Hengxin Lifting ${RUN}`;
    const xu = await as('xu.na', { shot: 'sign-in' });
    const instance = await startFromUi(xu.page, 'Customer complaint handling', 'complaint-handling', {
      Customer: customer,
      'Contact person and telephone': 'Mr Li, 0531-8888 6666',
    });

    // Register: from the worklist, the row naming the customer.
    const register = await taskAt(instance, 'register');
    const row = await worklistRow(xu.page, register);
    assert.match(await row.textContent(), new RegExp(customer), 'the row shows the instance summary (customer)');
    assert.match(await row.textContent(), /Customer complaint handling/, 'the row shows the procedure');
    await row.getByRole('button', { name: 'Claim', exact: true }).waitFor();
    await screenshot(xu.page, 'worklist');
    await assertCsrfEverywhere(xu.page);
    // The filters: another procedure hides the row, this one keeps it.
    for (const [proc, shown] of [['document-change', 0], ['complaint-handling', 1]]) {
      await xu.page.getByLabel(lbl('Procedure')).selectOption(proc);
      await Promise.all([
        xu.page.waitForURL(new RegExp(`/tasks\\?.*procedure=${proc}`)),
        xu.page.getByRole('button', { name: 'Filter', exact: true }).click(),
      ]);
      assert.equal(await xu.page.locator(`tr[data-task="${register}"]`).count(), shown, `filtered by ${proc}`);
    }
    for (const l of ['Role', 'State']) await xu.page.getByLabel(lbl(l)).waitFor();
    await openFromWorklist(xu.page, register, 'Register, classify and answer the complaint');
    await screenshot(xu.page, 'task-page');
    await assertCsrfEverywhere(xu.page);

    // The fields are the inputs their types call for.
    const p = xu.page;
    assert.equal(await p.getByLabel(lbl('Received through')).evaluate((e) => e.tagName), 'SELECT');
    assert.equal(await p.getByLabel(lbl('Classification')).evaluate((e) => e.tagName), 'SELECT');
    assert.equal(await p.getByLabel(lbl('Complaint')).evaluate((e) => e.tagName), 'TEXTAREA');
    assert.equal(await p.getByLabel(lbl('Answer given to the customer')).evaluate((e) => e.tagName), 'TEXTAREA');
    assert.equal(await p.getByLabel(lbl('Complaint received at')).getAttribute('type'), 'datetime-local');
    const channels = await p.getByLabel(lbl('Received through')).locator('option').allTextContents();
    assert.ok(channels.includes('telephone'), `the channel choices include "telephone": ${channels}`);

    // Submitted with required fields empty: refused, with each problem at its field, and what
    // she typed kept.
    const complaintText = 'The roller of the crane arrived damaged <and> scratched & bent';
    await p.getByLabel(lbl('Complaint')).fill(complaintText);
    await p.getByLabel(lbl('Comment')).fill('Called back at 10:05');
    const eventsBefore = (await instanceOf(instance)).events;
    const refused = await submit(p, p.getByRole('button', { name: 'Complete', exact: true }), /\/complete$/);
    assert.equal(refused.status(), 422, 'a refused form answers 422');
    await p.getByRole('alert').first().waitFor();
    assert.ok(await p.locator('.field-error').count() >= 3, 'a message next to each empty required field');
    for (const label of ['Received through', 'Complaint received at', 'Classification', 'Answer given to the customer']) {
      assert.equal(await p.getByLabel(lbl(label)).getAttribute('aria-invalid'), 'true', `${label} is marked invalid`);
    }
    assert.notEqual(await p.getByLabel(lbl('Complaint')).getAttribute('aria-invalid'), 'true', 'the filled field is not marked');
    assert.equal(await p.getByLabel(lbl('Complaint')).inputValue(), complaintText, 'the typed complaint is kept');
    assert.equal(await p.getByLabel(lbl('Comment')).inputValue(), 'Called back at 10:05', 'the typed comment is kept');
    await screenshot(p, 'refused-form');
    assert.equal((await instanceOf(instance)).events, eventsBefore, 'the refused form changed nothing');

    // Corrected and completed.
    await p.getByLabel(lbl('Received through')).selectOption('telephone');
    await p.getByLabel(lbl('Classification')).selectOption('general');
    await p.getByLabel(lbl('Answer given to the customer')).fill('A replacement roller ships today.');
    await p.getByLabel(lbl('Complaint received at')).fill('2026-11-02T08:30');
    assert.match(await completeWith(p, 'Complete'), /Register, classify and answer the complaint|done/i);
    assert.equal(await p.locator(`tr[data-task="${register}"]`).count(), 0, 'the task done leaves her worklist');
    const afterRegister = await instanceOf(instance);
    assert.equal(afterRegister.data.channel, 'telephone');
    assert.equal(afterRegister.data.complaint, complaintText);

    // Liu Yang (sales) sees the resolution in his worklist, claims it, completes it.
    const resolve = await taskAt(instance, 'resolve_general');
    const liu = await as('liu.yang');
    const liuRow = await worklistRow(liu.page, resolve);
    assert.match(await liuRow.textContent(), /Resolve the complaint/);
    assert.match(await liuRow.textContent(), new RegExp(customer));
    await Promise.all([
      liu.page.waitForURL(at('/tasks')),
      liuRow.getByRole('button', { name: 'Claim', exact: true }).click(),
    ]);
    assert.match(await flash(liu.page), /claim/i);
    await liu.page.locator(`tr[data-task="${resolve}"]`).getByRole('button', { name: 'Release', exact: true }).waitFor();
    assert.equal((await apiGet('liu.yang', `/v1/tasks/${resolve}`)).holder, 'liu.yang', 'the task is with him');
    await openFromWorklist(liu.page, resolve, 'Resolve the complaint and fill in the completion column');
    assert.equal(await liu.page.getByLabel(lbl('Resolved on')).getAttribute('type'), 'date');
    await liu.page.getByLabel(lbl('Completion (what was done)')).fill('Replaced the roller on site.');
    await liu.page.getByLabel(lbl('Resolved on')).fill('2026-11-02');
    await completeWith(liu.page, 'Complete');

    // Gao Yan (follow_up) does the follow-up visit: satisfied, so the complaint closes.
    const visit = await taskAt(instance, 'follow_up_visit');
    const gao = await as('gao.yan');
    await openFromWorklist(gao.page, visit, 'Follow up with the customer');
    const satisfied = gao.page.getByLabel(lbl('Customer satisfied'));
    assert.equal(await satisfied.getAttribute('type'), 'checkbox');
    await satisfied.check();
    await gao.page.getByLabel(lbl("Customer's evaluation")).fill('Very satisfied with the quick repair.');
    await gao.page.getByLabel(lbl("Customer's satisfaction score (0–100)")).fill('98');
    await completeWith(gao.page, 'Complete');

    const done = await instanceOf(instance);
    assert.equal(done.status, 'completed');
    assert.equal(done.end_step, 'closed');

    // The instance page: status, the timeline with all three, the picture.
    await gao.page.goto(`/instances/${instance}`);
    assert.match(await gao.page.locator('h1').textContent(), /Customer complaint handling/);
    assert.match(await gao.page.locator('main').textContent(), /completed/i, 'the page says it is completed');
    const timeline = await gao.page.locator('#timeline').textContent();
    for (const name of ['Xu Na', 'Liu Yang', 'Gao Yan']) {
      assert.match(timeline, new RegExp(name), `the timeline names ${name}`);
    }
    await gao.page.locator('figure.picture svg').first().waitFor();
    await screenshot(gao.page, 'instance-page');
    await assertCsrfEverywhere(gao.page);
    assert.deepEqual(xu.dialogs.concat(liu.dialogs, gao.dialogs), [], 'no dialog opened');
  });
});

// -------------------------------------------------------------------------------------------
/** Lin Tao applies for a change of a document approved by `approver` — who follows from the
 * kind of document (seed 002 §3.1–§3.2): a procedure goes to the general manager, an
 * institutional (management) document to the management representative. Returns the
 * instance, now at the approval step. */
async function applyForChange(lin, approver, docTitle) {
  const kind = approver === 'general_manager' ? 'procedure' : 'management';
  const instance = await startFromUi(lin.page, 'Controlled document change', 'document-change', {
    'Document number': 'CX-05',
    'Document title': docTitle,
    'Kind of document': kind,
    'Current revision status': 'B/1',
    Applicant: 'lin.tao',
  });
  const apply = await taskAt(instance, 'apply');
  await openFromWorklist(lin.page, apply, 'Fill in the Document Change Application (Notice) Form');
  await lin.page.getByLabel(lbl('Reasons for the change')).fill('The inspection interval in §4.2 is out of date.');
  await lin.page.getByLabel(lbl('Contents of the change')).fill('Change the inspection interval from 6 to 3 months.');
  assert.equal(await lin.page.getByLabel(lbl('Important modification')).getAttribute('type'), 'checkbox');
  await lin.page.getByLabel(lbl('How the document is changed')).selectOption('page_change');
  await completeWith(lin.page, 'Complete');
  return instance;
}

test('2. a sign-off states its meaning before signing and the timeline keeps it', async () => {
  await keepEvidence('journey2', live(), async () => {
    const lin = await as('lin.tao');
    const instance = await applyForChange(lin, 'management_rep', `Equipment inspection procedure ${RUN}`);
    const approve = await taskAt(instance, 'approve_mr');

    const qian = await as('qian.li');
    await openFromWorklist(qian.page, approve, 'Approve the document change');
    const form = qian.page.locator('form', { has: qian.page.getByRole('button', { name: 'Approve', exact: true }) });
    const meaning = form.locator('p', { hasText: 'Signing means' });
    await meaning.waitFor();
    assert.match(await meaning.textContent(), /approved/, 'the meaning is stated');
    // Stated before the buttons.
    const before = await meaning.evaluate((m) => {
      const b = [...m.closest('form').querySelectorAll('button[name=_outcome]')];
      return b.length > 0 && b.every((x) => m.compareDocumentPosition(x) & Node.DOCUMENT_POSITION_FOLLOWING);
    });
    assert.ok(before, 'the meaning comes before the outcome buttons');
    const outcomes = await form.locator('button[name=_outcome]').evaluateAll((bs) => bs.map((b) => [b.value, b.textContent.trim()]));
    assert.deepEqual(outcomes, [['approve', 'Approve'], ['rework', 'Rework'], ['reject', 'Reject']]);
    await qian.page.getByLabel(lbl('Approval comments')).fill('Agreed: three months matches the new regulation.');
    await screenshot(qian.page, 'sign-off-task');
    await completeWith(qian.page, 'Approve');

    const inst = await instanceOf(instance);
    assert.ok(inst.tasks.some((t) => t.step === 'make_partial_change'), 'on to the partial change');
    const signature = (await historyOf(instance)).filter((e) => e.by?.user === 'qian.li' && e.kind === 'task_completed');
    assert.equal(signature.length, 1, 'one completion by Qian Li');
    assert.equal(signature[0].details.meaning, 'approved', `the signature's meaning is recorded: ${JSON.stringify(signature[0])}`);
    await qian.page.goto(`/instances/${instance}`);
    const timeline = qian.page.locator('#timeline');
    assert.match(await timeline.textContent(), /Qian Li/);
    const signed = timeline.locator('li', { hasText: 'Qian Li' }).filter({ hasText: /approved/ });
    assert.ok(await signed.count() >= 1, 'the timeline entry of her signature shows its meaning "approved"');
    assert.match(await signed.first().textContent(), /sign/i, 'and says it is a signature');
  });
});

// -------------------------------------------------------------------------------------------
test('3. a delegation with a reason reaches the colleague', async () => {
  await keepEvidence('journey3', live(), async () => {
    const lin = await as('lin.tao');
    const instance = await applyForChange(lin, 'management_rep', `Warehouse procedure ${RUN}`);
    const approve = await taskAt(instance, 'approve_mr');

    // Zhao Gang is general manager, not management representative: the step is not his
    // until Qian Li hands it to him (same level or above, one of the allowed roles).
    const zhao = await as('zhao.gang');
    await zhao.page.goto('/tasks');
    assert.equal(await zhao.page.locator(`tr[data-task="${approve}"]`).count(), 0, 'not in his worklist yet');

    const qian = await as('qian.li');
    await openFromWorklist(qian.page, approve, 'Approve the document change');
    const p = qian.page;
    if (!(await p.getByLabel(lbl('Delegate to')).isVisible())) {
      // In a closed <details>: open it the way a person would.
      await p.locator('summary', { hasText: 'Delegate' }).click();
    }
    const to = p.getByLabel(lbl('Delegate to'));
    const people = await to.locator('option').evaluateAll((os) => os.map((o) => o.value));
    assert.ok(people.includes('zhao.gang'), `Zhao Gang may be chosen: ${people}`);
    assert.ok(!people.includes('xu.na'), 'someone below her level may not');
    // The step requires a reason: without one, refused and nothing changes.
    const eventsBefore = (await instanceOf(instance)).events;
    await to.selectOption('zhao.gang');
    const refused = await submit(p, p.getByRole('button', { name: 'Delegate', exact: true }), /\/delegate$/);
    assert.equal(refused.status(), 422, 'a delegation without a reason answers 422');
    await p.getByRole('alert').first().waitFor();
    assert.equal((await instanceOf(instance)).events, eventsBefore, 'the refused delegation changed nothing');
    assert.equal((await apiGet('jiang.audit', `/v1/tasks/${approve}`)).holder ?? null, null);
    if (!(await p.getByLabel(lbl('Delegate to')).isVisible())) {
      await p.locator('summary', { hasText: 'Delegate' }).click();
    }
    await to.selectOption('zhao.gang');
    await p.getByLabel(lbl('Reason')).fill('Away at the supplier audit until Friday.');
    await Promise.all([p.waitForURL(at('/tasks')), p.getByRole('button', { name: 'Delegate', exact: true }).click()]);
    assert.match(await flash(p), /Zhao Gang/, 'the message names the colleague');

    const task = await apiGet('jiang.audit', `/v1/tasks/${approve}`);
    assert.equal(task.holder, 'zhao.gang');

    const row = await worklistRow(zhao.page, approve);
    assert.match(await row.textContent(), /Approve the document change/);
    await openFromWorklist(zhao.page, approve, 'Approve the document change');
    await zhao.page.getByRole('button', { name: 'Approve', exact: true }).waitFor();
    // The instance's timeline says who handed it on, to whom and why.
    await zhao.page.goto(`/instances/${instance}`);
    const entry = zhao.page.locator('#timeline li', { hasText: 'Away at the supplier audit until Friday.' });
    await entry.first().waitFor();
    assert.match(await entry.first().textContent(), /Qian Li/);
    assert.match(await entry.first().textContent(), /Zhao Gang/);
  });
});

// -------------------------------------------------------------------------------------------
test('4. an auditor searches, reads a timeline, verifies every chain and downloads', async () => {
  await keepEvidence('journey4', live(), async () => {
    // Something of Xu Na's to find, whatever ran before.
    const [st, started] = await api('xu.na', 'POST', '/v1/instances', {
      procedure: 'complaint-handling', data: { customer: `Audit Co ${RUN}`, contact: 'Ms Wang' },
    });
    assert.equal(st, 201, JSON.stringify(started));

    const jiang = await as('jiang.audit');
    const p = jiang.page;
    const nav = p.getByRole('navigation');
    await nav.getByRole('link', { name: 'Audit', exact: true }).click();
    await p.waitForURL(at('/audit'));
    for (const l of ['Person', 'Procedure', 'Kind', 'From', 'To']) await p.getByLabel(lbl(l)).waitFor();
    await p.getByLabel(lbl('Person')).selectOption('xu.na');
    await Promise.all([p.waitForURL(/\/audit\?.*actor=xu\.na/), p.getByRole('button', { name: 'Search', exact: true }).click()]);
    const rows = p.locator('table tbody tr');
    assert.ok(await rows.count() >= 1, 'events found');
    for (const who of await rows.locator('td:nth-child(2)').allTextContents()) {
      assert.match(who, /Xu Na/, 'every event found is hers');
    }
    await screenshot(p, 'audit-search');

    // Downloads of what was searched.
    const shown = await rows.count();
    for (const [name, type, check] of [
      ['Download CSV', /^text\/csv\b/, (body) => {
        const [header, ...records] = parseCsv(body).filter((r) => r.length > 1);
        const user = header.indexOf('user');
        assert.ok(user >= 0, `a user column: ${header}`);
        assert.ok(records.length >= shown, `at least the ${shown} events shown`);
        for (const r of records) assert.equal(r[user], 'xu.na', `every row is Xu Na's: ${r}`);
      }],
      ['Download JSON Lines', /^application\/(x-)?(ndjson|jsonl)\b/, (body) => {
        const lines = body.trim().split('\n').map((l) => JSON.parse(l));
        assert.ok(lines.length >= shown, `at least the ${shown} events shown`);
        for (const l of lines) assert.equal(l.event?.by?.user, 'xu.na', `every line is Xu Na's: ${JSON.stringify(l)}`);
      }],
    ]) {
      const link = p.getByRole('link', { name, exact: true });
      const href = await link.getAttribute('href');
      assert.match(href, /actor=xu\.na/, `${name} keeps the search`);
      const [download] = await Promise.all([p.waitForEvent('download'), link.click()]);
      const body = await readFile(await download.path(), 'utf8');
      assert.match(body, new RegExp(started.id), `${name} holds the instance just started`);
      check(body);
      const res = await jiang.context.request.get(href);
      assert.equal(res.status(), 200);
      assert.match(res.headers()['content-type'] ?? '', type, `${name} content type`);
    }

    // An instance's timeline from a result row.
    const link = rows.first().locator('a[href^="/instances/"]');
    await Promise.all([p.waitForURL(new RegExp(`/instances/${UUID}$`)), link.click()]);
    await p.locator('#timeline').waitFor();
    assert.match(await p.locator('#timeline').textContent(), /Xu Na/);

    // Verify every chain.
    await nav.getByRole('link', { name: 'Audit', exact: true }).click();
    await p.waitForURL(at('/audit'));
    await Promise.all([p.waitForURL(at('/audit/verify')), p.getByRole('link', { name: 'Verify all histories' }).click()]);
    const verdict = (await status(p).first().textContent()).trim();
    assert.match(verdict, /verif/i);
    assert.doesNotMatch(verdict, /not verify|broken|fail/i, `every chain verifies: ${verdict}`);
    await screenshot(p, 'audit-verify');
  });
});

// -------------------------------------------------------------------------------------------
test('5. a task not offered to you: Not allowed, and nothing changes', async () => {
  await keepEvidence('journey5', live(), async () => {
    const [st, started] = await api('xu.na', 'POST', '/v1/instances', {
      procedure: 'complaint-handling', data: { customer: `Refusal Ltd ${RUN}`, contact: 'Mr Zhang' },
    });
    assert.equal(st, 201, JSON.stringify(started));
    const register = await taskAt(started.id, 'register');
    const before = await instanceOf(started.id);
    const historyBefore = await historyOf(started.id);

    for (const user of ['liu.yang', 'wu.fang']) {
      const s = await as(user);
      const seen = await s.page.locator(`tr[data-task="${register}"]`).count();
      assert.equal(seen, 0, `${user} is not offered the register task`);
      const res = await s.page.goto(`/tasks/${register}`);
      assert.equal(res.status(), 403, `${user} opening the task`);
      assert.equal((await s.page.locator('h1').textContent()).trim(), 'Not allowed');
      if (user === 'liu.yang') await screenshot(s.page, 'not-allowed');

      // Posting the forms anyway, with the person's own valid session and CSRF token.
      await s.page.goto('/tasks');
      const csrf = await csrfOf(s.page);
      for (const [path, form] of [
        [`/tasks/${register}/claim`, { _csrf: csrf }],
        [`/tasks/${register}/complete`, {
          _csrf: csrf, _outcome: 'done', 'f.channel': 'telephone', 'f.complaint': 'x', 'f.severity': 'general',
          'f.first_answer': 'y', 'f.received_at': '2026-11-02T08:30', comment: 'not mine',
        }],
      ]) {
        const r = await s.context.request.post(path, { form, maxRedirects: 0 });
        assert.equal(r.status(), 403, `${user} POST ${path}`);
        assert.match(await r.text(), /<h1>Not allowed<\/h1>/);
      }
    }
    const afterwards = await instanceOf(started.id);
    assert.equal(afterwards.events, before.events, 'the history is unchanged');
    assert.equal(afterwards.updated_at, before.updated_at);
    assert.deepEqual(afterwards.tasks, before.tasks, 'the task is as it was');
    assert.deepEqual(await historyOf(started.id), historyBefore, 'the history is the same, event for event');
  });
});

// -------------------------------------------------------------------------------------------
test('6. CSRF: a post without the session token changes nothing; XSS: typed text stays text', async () => {
  await keepEvidence('journey6', live(), async () => {
    const xu = await as('xu.na');
    const gao = await as('gao.yan');
    const nasty = `<img src=x onerror=alert(2)> Evil ${RUN}`;
    const instance = await startFromUi(xu.page, 'Customer complaint handling', 'complaint-handling', {
      Customer: nasty,
      'Contact person and telephone': '"><script>alert(3)</script>',
    });
    const register = await taskAt(instance, 'register');
    const before = await instanceOf(instance);

    await xu.page.goto('/tasks');
    const good = await csrfOf(xu.page);
    const othersToken = await csrfOf(gao.page);
    for (const [what, form, headers] of [
      ['no _csrf', {}, {}],
      ['an empty _csrf', { _csrf: '' }, {}],
      ['a wrong _csrf', { _csrf: good.slice(0, -2) + (good.endsWith('AA') ? 'BB' : 'AA') }, {}],
      ["another session's _csrf", { _csrf: othersToken }, {}],
      ['the right _csrf from another site', { _csrf: good }, { Origin: 'https://evil.example' }],
    ]) {
      const r = await xu.context.request.post(`/tasks/${register}/claim`, { form, headers, maxRedirects: 0 });
      assert.equal(r.status(), 403, `claim with ${what}`);
    }
    const still = await instanceOf(instance);
    assert.equal(still.events, before.events, 'nothing was written');
    assert.equal(still.tasks.find((t) => t.id === register).holder ?? null, null, 'the task is still unclaimed');
    // The same post with the right token is accepted: the refusals above were the token's.
    const ok = await xu.context.request.post(`/tasks/${register}/claim`, { form: { _csrf: good }, maxRedirects: 0 });
    assert.equal(ok.status(), 303, 'claim with the right _csrf');
    assert.equal((await apiGet('xu.na', `/v1/tasks/${register}`)).holder, 'xu.na');

    // The typed customer shows as text in the worklist and on the instance page.
    const row = await worklistRow(xu.page, register);
    assert.match(await row.textContent(), new RegExp(escapeRe(nasty)));
    assert.equal(await xu.page.locator('img[src="x"]').count(), 0, 'no image element was made from the text');

    await xu.page.goto(`/instances/${instance}`);
    await xu.page.getByLabel(lbl('Comment')).fill('<script>alert(1)</script>');
    await Promise.all([
      xu.page.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/comments')),
      xu.page.getByRole('button', { name: 'Add comment', exact: true }).click(),
    ]);
    await xu.page.waitForURL(at(`/instances/${instance}`));
    await xu.page.locator('#timeline', { hasText: '<script>alert(1)</script>' }).waitFor();
    assert.match(await xu.page.locator('h1').textContent(), /<img src=x onerror=alert\(2\)>/);
    assert.equal(await xu.page.locator('img[src="x"]').count(), 0);
    const injected = await xu.page.locator('script').evaluateAll((ss) => ss.filter((s) => /alert/.test(s.textContent)).length);
    assert.equal(injected, 0, 'no script element was made from the text');
    assert.deepEqual(xu.dialogs, [], 'no dialog opened');
    await screenshot(xu.page, 'xss-instance');
  });
});

// -------------------------------------------------------------------------------------------
test('7. security headers, the session cookie, signing out', async () => {
  await keepEvidence('journey7', live(), async () => {
    // Not signed in: to the sign-in page.
    const anon = await browser.newContext({ baseURL: BASE_URL });
    contexts.push(anon);
    const ap = await anon.newPage();
    await ap.goto('/tasks');
    await ap.waitForURL(at('/sign-in'));
    await ap.goto('/instances/00000000-0000-0000-0000-000000000000');
    await ap.waitForURL(at('/sign-in'));

    // A wrong token is refused on the sign-in page.
    await ap.getByLabel('API token').fill('not-a-token');
    await ap.getByRole('button', { name: 'Sign in' }).click();
    await ap.getByRole('alert').waitFor();
    assert.match(ap.url(), /\/sign-in$/);

    // Signing in from a form on another site (login CSRF) is refused, even with a good token.
    const cross = await anon.request.post('/sign-in', {
      form: { token: token('xu.na') }, headers: { Origin: 'https://evil.example' }, maxRedirects: 0,
    });
    assert.equal(cross.status(), 403, 'sign-in posted from another origin');
    assert.equal((await anon.cookies()).filter((c) => c.name === 'sopflow_session').length, 0, 'no session from it');

    const s = await as('xu.na');
    const res = await s.page.goto('/tasks');
    const h = res.headers();
    const csp = h['content-security-policy'];
    assert.ok(csp, 'a Content-Security-Policy');
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /default-src 'self'/);
    assert.equal(h['x-frame-options'], 'DENY');
    assert.equal(h['x-content-type-options'], 'nosniff');

    const cookies = await s.context.cookies();
    const session = cookies.find((c) => c.name === 'sopflow_session');
    assert.ok(session, `a sopflow_session cookie: ${cookies.map((c) => c.name)}`);
    assert.equal(session.httpOnly, true, 'HttpOnly');
    assert.equal(session.sameSite, 'Strict', 'SameSite=Strict');
    assert.equal(await s.page.evaluate(() => document.cookie.includes('sopflow_session')), false, 'scripts cannot read it');

    // The nav of a member of staff: no Audit, no Clock; the name; Sign out.
    const nav = s.page.getByRole('navigation');
    for (const l of ['My work', 'Start', 'Notifications', 'Procedures']) {
      await nav.getByRole('link', { name: l, exact: true }).waitFor();
    }
    assert.equal(await nav.getByRole('link', { name: 'Audit', exact: true }).count(), 0);
    assert.equal(await nav.getByRole('link', { name: 'Clock', exact: true }).count(), 0);
    assert.match(await s.page.locator('body').textContent(), /Xu Na/);

    // Signing out ends the session at once.
    await Promise.all([s.page.waitForURL(at('/sign-in')), s.page.getByRole('button', { name: 'Sign out' }).click()]);
    await s.page.goto('/tasks');
    await s.page.waitForURL(at('/sign-in'));
  });
});

// -------------------------------------------------------------------------------------------
test('8. notifications, procedures and a procedure checked at line:column', async () => {
  await keepEvidence('pages', live(), async () => {
    const chen = await as('chen.jing');
    const p = chen.page;
    await p.getByRole('navigation').getByRole('link', { name: 'Notifications', exact: true }).click();
    await p.waitForURL(at('/notifications'));
    assert.equal((await p.locator('h1').textContent()).trim(), 'Notifications');

    await p.getByRole('navigation').getByRole('link', { name: 'Procedures', exact: true }).click();
    await p.waitForURL(at('/procedures'));
    await p.getByRole('link', { name: 'Customer complaint handling', exact: true }).waitFor();
    await screenshot(p, 'procedures');

    // Validation: a wrong role is shown at its line and column.
    await p.goto('/procedures/validate');
    const text = [
      'id = "tiny"',
      'version = 1',
      'title = "Tiny"',
      'start = "a"',
      'start_roles = ["staff"]',
      '',
      '[steps.a]',
      'title = "A"',
      'role = "staf"',
      'next = [{ to = "done" }]',
      '',
      '[steps.done]',
      'kind = "end"',
      'title = "Done"',
    ].join('\n');
    await p.getByLabel(lbl('Procedure text')).fill(text);
    await submit(p, p.getByRole('button', { name: 'Validate', exact: true }), /\/procedures\/validate$/);
    const page = await p.locator('main').textContent();
    assert.match(page, /\b9:\d+/, 'a diagnostic at line 9 (role = "staf") with its column');
    assert.equal(await p.getByLabel(lbl('Procedure text')).inputValue(), text, 'the text is kept');
    await screenshot(p, 'validate');
    await assertCsrfEverywhere(p);
  });
});

// -------------------------------------------------------------------------------------------
test('9. the KPI report counts what happened so far', async () => {
  await keepEvidence('kpis', live(), async () => {
    // A complaint started now, for the report to count whatever ran before.
    const [st, started] = await api('xu.na', 'POST', '/v1/instances', {
      procedure: 'complaint-handling', data: { customer: `Report Co ${RUN}`, contact: 'Ms Qin' },
    });
    assert.equal(st, 201, JSON.stringify(started));
    const jiang = await as('jiang.audit');
    await jiang.page.getByRole('navigation').getByRole('link', { name: 'Reports', exact: true }).waitFor();
    const r = await jiang.page.goto('/reports/kpis?procedure=complaint-handling');
    assert.equal(r.status(), 200);
    assert.match(await jiang.page.locator('main').textContent(), /Customer complaint handling/);
    assert.match(await jiang.page.locator('main').textContent(), /Satisfaction rate at the follow-up visit/);
    await screenshot(jiang.page, 'kpi-report');
    // The default period runs to now, and what happened up to now is counted: on the manual
    // clock everything so far happened at this very instant.
    const figure = jiang.page.locator('li', { hasText: /^\s*\d+\s+started\s*$/ });
    await figure.first().waitFor();
    const n = Number((await figure.first().textContent()).trim().split(/\s+/)[0]);
    assert.ok(n >= 1, `the report counts the complaints started so far (shows ${n} started)`);
  });
});

// -------------------------------------------------------------------------------------------
test('10. the worklist at phone width (390×844)', async () => {
  await keepEvidence('phone', live(), async () => {
    const phone = await as('xu.na', { viewport: { width: 390, height: 844 } });
    await phone.page.locator('table, .empty').first().waitFor();
    const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await screenshot(phone.page, 'worklist-phone');
    assert.ok(overflow <= 0, `the worklist fits a phone's width (${overflow}px too wide)`);
  });
});

// -------------------------------------------------------------------------------------------
test('11. refusals are pages with the API’s status: Not found, and a task already done', async () => {
  await keepEvidence('errors', live(), async () => {
    const headings = { 403: 'Not allowed', 404: 'Not found', 409: 'Conflict', 422: 'Cannot do that' };
    const xu = await as('xu.na');
    const p = xu.page;

    const nobody = '00000000-0000-4000-8000-000000000000';
    const [apiStatus] = await api('xu.na', 'GET', `/v1/tasks/${nobody}`);
    const res = await p.goto(`/tasks/${nobody}`);
    assert.equal(res.status(), apiStatus, 'the page answers what the API answers');
    assert.equal(res.status(), 404);
    assert.equal((await p.locator('h1').textContent()).trim(), 'Not found');
    const [instStatus] = await api('xu.na', 'GET', `/v1/instances/${nobody}`);
    const inst = await p.goto(`/instances/${nobody}`);
    assert.equal(inst.status(), instStatus);
    assert.equal((await p.locator('h1').textContent()).trim(), headings[inst.status()]);

    // A task completed through the API, then posted again from the page she still has open.
    const [st, started] = await api('xu.na', 'POST', '/v1/instances', {
      procedure: 'complaint-handling', data: { customer: `Twice Ltd ${RUN}`, contact: 'Mr Zhou' },
    });
    assert.equal(st, 201, JSON.stringify(started));
    const register = await taskAt(started.id, 'register');
    await p.goto(`/tasks/${register}`);
    await p.getByLabel(lbl('Received through')).selectOption('telephone');
    await p.getByLabel(lbl('Complaint')).fill('Late delivery');
    await p.getByLabel(lbl('Classification')).selectOption('general');
    await p.getByLabel(lbl('Answer given to the customer')).fill('Sorry; it ships today.');
    await p.getByLabel(lbl('Complaint received at')).fill('2026-11-02T08:30');
    const form = { channel: 'telephone', complaint: 'Late delivery', severity: 'general', first_answer: 'Sorry; it ships today.', received_at: '2026-11-02T08:30:00Z' };
    const [done] = await api('xu.na', 'POST', `/v1/tasks/${register}/complete`, { form });
    assert.equal(done, 200, 'completed through the API first');
    const events = (await instanceOf(started.id)).events;
    const [again] = await api('xu.na', 'POST', `/v1/tasks/${register}/complete`, { form });
    const twice = await submit(p, p.getByRole('button', { name: 'Complete', exact: true }), /\/complete$/);
    assert.equal(twice.status(), again, `the page answers what the API answers (${again})`);
    assert.ok(headings[twice.status()], `a refusal status: ${twice.status()}`);
    assert.equal((await p.locator('h1').textContent()).trim(), headings[twice.status()]);
    assert.equal((await instanceOf(started.id)).events, events, 'nothing was written');
    await screenshot(p, 'already-done');
  });
});

// -------------------------------------------------------------------------------------------
test('12. the admin moves the manual clock (last: it changes due times)', async () => {
  await keepEvidence('clock', live(), async () => {
    const admin = await as('it.admin');
    await admin.page.getByRole('navigation').getByRole('link', { name: 'Clock', exact: true }).click();
    await admin.page.waitForURL(at('/admin/clock'));
    await admin.page.getByLabel(lbl('Move the clock by')).fill('1h');
    await submit(admin.page, admin.page.getByRole('button', { name: 'Move clock', exact: true }), /\/admin\/clock$/);
    assert.match(await flash(admin.page), /10:00/, 'moved from 09:00 to 10:00');
    await screenshot(admin.page, 'clock');
    await assertCsrfEverywhere(admin.page);
  });
});

// -------------------------------------------------------------------------------------------
// 13–15, the change journeys, run last and in this order (13 deploys complaint-handling
// version 3, which every later start uses; 14 repairs; 15 migrates the version-2 instances,
// those of the journeys above too). Run them alone with --test-name-pattern='^1[3-5]\. change'.
const change = {
  /** A complaint started on version 2 before the deployment, migrated in 15. */
  onV2: null,
};
const versionsOf = async (proc) => (await apiGet('jiang.audit', `/v1/procedures/${proc}/versions`)).items;
const deploymentsCount = async () => (await apiGet('it.admin', '/v1/deployments?limit=500')).items.length;
/** The page's horizontal overflow in CSS pixels (0 when it fits the window). */
const overflowOf = (page) => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);

test('13. change: a process owner deploys a new version, refused first, then registered', async () => {
  await keepEvidence('deploy', live(), async () => {
    const [s, started] = await api('xu.na', 'POST', '/v1/instances',
      { procedure: 'complaint-handling', data: { customer: `Migrated ${RUN}`, contact: 'Li' } });
    assert.equal(s, 201, JSON.stringify(started));
    assert.equal(started.version, 2);
    change.onV2 = started.id;
    assert.deepEqual((await versionsOf('complaint-handling')).map((v) => v.version), [2], 'only version 2 so far');

    // From the procedure's page to a copy of its text in the check page.
    const chen = await as('chen.jing');
    const p = chen.page;
    await p.goto('/procedures/complaint-handling');
    await p.locator('summary', { hasText: 'The procedure file' }).click();
    await Promise.all([
      p.waitForURL(at('/procedures/validate')),
      p.getByRole('link', { name: 'Edit a copy and check it', exact: true }).click(),
    ]);
    assert.match(p.url(), /procedure=complaint-handling/);
    assert.equal(await p.getByLabel(lbl('File name')).inputValue(), 'complaint-handling.toml');
    const box = p.getByLabel(lbl('Procedure text'));
    const original = await box.inputValue();
    assert.match(original, /\nversion = 2\n/, 'the current text, version 2');
    assert.equal(await p.locator('#deploy-result').count(), 0, 'no deployment said yet');

    // Changed without raising the version: refused, with what to do, and nothing registered.
    const deployments = await deploymentsCount();
    const renamed = original.replace('title = "Customer complaint handling"', 'title = "Complaints"');
    assert.notEqual(renamed, original);
    await box.fill(renamed);
    const refused = await submit(p, p.getByRole('button', { name: 'Deploy', exact: true }), /\/procedures\/validate$/);
    assert.equal(refused.status(), 200);
    const said = (await p.locator('#deploy-result').textContent()).trim();
    assert.match(said, /^Not deployed: .*version/, `the refusal names the version: ${said}`);
    assert.match(said, /version = 3/, `and says what to write: ${said}`);
    assert.equal(await box.inputValue(), renamed, 'the typed text is kept');
    assert.deepEqual((await versionsOf('complaint-handling')).map((v) => v.version), [2], 'nothing registered');
    assert.equal(await deploymentsCount(), deployments + 1, 'the refusal is in the deployments history');
    await screenshot(p, 'deploy-refused');

    // A raised version with a mistake in it: refused, the mistake shown at its line.
    const broken = original.replace('\nversion = 2\n', '\nversion = 3\n').replace('start = "register"', 'start = "registr"');
    assert.notEqual(broken, original.replace('\nversion = 2\n', '\nversion = 3\n'));
    await box.fill(broken);
    await submit(p, p.getByRole('button', { name: 'Deploy', exact: true }), /\/procedures\/validate$/);
    assert.match(await p.locator('#deploy-result').textContent(), /Not deployed: the text has errors/);
    const line = broken.split('\n').indexOf('start = "registr"') + 1;
    assert.ok(line > 0);
    assert.match(await p.locator('ol.diagnostics').textContent(), new RegExp(`line ${line}:\\d+`), `a diagnostic at line ${line}`);
    assert.deepEqual((await versionsOf('complaint-handling')).map((v) => v.version), [2], 'still nothing registered');

    // Validate never registers, even a clean raised text.
    const raised = original.replace('\nversion = 2\n', '\nversion = 3\n');
    await box.fill(raised);
    await submit(p, p.getByRole('button', { name: 'Validate', exact: true }), /\/procedures\/validate$/);
    assert.equal(await p.locator('#deploy-result').count(), 0);
    assert.match(await status(p).first().textContent(), /No errors/);
    assert.deepEqual((await versionsOf('complaint-handling')).map((v) => v.version), [2], 'validating registers nothing');

    // With the version raised: registered.
    await submit(p, p.getByRole('button', { name: 'Deploy', exact: true }), /\/procedures\/validate$/);
    const deployed = (await p.locator('#deploy-result').textContent()).trim();
    assert.match(deployed, /^Deployed: complaint-handling version 3 is registered/, deployed);
    assert.deepEqual((await versionsOf('complaint-handling')).map((v) => v.version).sort(), [2, 3]);
    await screenshot(p, 'deploy');
    await assertCsrfEverywhere(p);

    // New instances start on it; the one already running stays on version 2.
    const [s3, onV3] = await api('xu.na', 'POST', '/v1/instances',
      { procedure: 'complaint-handling', data: { customer: `New version ${RUN}`, contact: 'Wang' } });
    assert.equal(s3, 201, JSON.stringify(onV3));
    assert.equal(onV3.version, 3);
    assert.equal((await instanceOf(change.onV2)).version, 2);

    // The procedure page lists both versions, version 3 the one new instances start on.
    await p.goto('/procedures/complaint-handling');
    const rows = p.locator('#versions tbody tr');
    assert.equal(await rows.count(), 2);
    const cells = async (i) => (await rows.nth(i).locator('td').allTextContents()).map((t) => t.trim().replace(/\s+/g, ' '));
    const [v3, v2] = [await cells(0), await cells(1)];
    assert.match(v3[0], /^3 new instances$/i, `version 3 first, for new instances: ${v3}`);
    assert.match(v2[0], /^2$/, `then version 2, not for new instances: ${v2}`);
    assert.ok(Number(v2[2]) >= 1, `version 2 has running instances: ${v2}`);
    assert.ok(Number(v3[2]) >= 1, `so has version 3: ${v3}`);
    assert.equal(await p.getByRole('link', { name: 'Move running instances to another version' }).count(), 0,
      'a process owner who is no operator is not offered the migration');
    await p.locator('#versions').screenshot({ path: `${SHOTS}/procedure-versions.png` });

    // The deployments history: her registration and her refusal, by name, newest first.
    await p.goto('/procedures');
    await Promise.all([p.waitForURL(at('/procedures/deployments')), p.getByRole('link', { name: 'Deployments', exact: true }).click()]);
    const table = p.locator('table.deployments tbody tr');
    const registered = table.filter({ hasText: /complaint-handling version 3 registered/ });
    assert.equal(await registered.count(), 1);
    assert.equal((await registered.locator('td').last().textContent()).trim(), 'Chen Jing');
    const refusal = table.filter({ hasText: /complaint-handling version 2 refused/ });
    assert.equal(await refusal.count(), 1);
    assert.equal((await refusal.locator('td').last().textContent()).trim(), 'Chen Jing');
    assert.match(await refusal.textContent(), /without raising `?version/, 'the refusal says why');
    const order = await table.evaluateAll((trs) => trs.map((tr) => tr.textContent));
    const at3 = order.findIndex((t) => /complaint-handling version 3 registered/.test(t));
    const atRefusal = order.findIndex((t) => /complaint-handling version 2 refused/.test(t));
    assert.ok(at3 < atRefusal, 'newest first');
    await screenshot(p, 'deployments');
    await p.setViewportSize({ width: 390, height: 844 });
    await p.reload();
    assert.ok(await overflowOf(p) <= 0, `the deployments fit a phone (${await overflowOf(p)}px too wide)`);
    await screenshot(p, 'deployments-phone');

    // A member of staff may not deploy, even posting the form with her own session.
    const xu = await as('xu.na');
    assert.equal((await xu.page.goto('/procedures/validate')).status(), 403);
    await xu.page.goto('/tasks');
    const csrf = await csrfOf(xu.page);
    const before = await deploymentsCount();
    const r = await xu.context.request.post('/procedures/validate', {
      form: { _csrf: csrf, name: 'complaint-handling.toml', text: original.replace('\nversion = 2\n', '\nversion = 4\n'), action: 'deploy' },
      maxRedirects: 0,
    });
    assert.equal(r.status(), 403, 'deploying as staff');
    assert.deepEqual((await versionsOf('complaint-handling')).map((v) => v.version).sort(), [2, 3]);
    assert.equal(await deploymentsCount(), before, 'nothing recorded');
  });
});

// -------------------------------------------------------------------------------------------
test('14. change: an operator suspends and resumes an instance, moves its work and withdraws a task', async () => {
  await keepEvidence('repair', live(), async () => {
    let instance = change.onV2;
    if (!instance) {
      const [s, started] = await api('xu.na', 'POST', '/v1/instances',
        { procedure: 'complaint-handling', data: { customer: `Suspended ${RUN}`, contact: 'Li' } });
      assert.equal(s, 201, JSON.stringify(started));
      instance = started.id;
    }
    const register = await taskAt(instance, 'register');

    // Neither staff nor a process owner sees the operator's panel, nor may post its forms.
    const xu = await as('xu.na');
    const chen = await as('chen.jing');
    for (const who of [xu, chen]) {
      await who.page.goto(`/instances/${instance}`);
      assert.equal(await who.page.locator('#repair').count(), 0, `${who.user} sees no repair panel`);
    }
    const eventsBefore = (await instanceOf(instance)).events;
    const notMine = await xu.context.request.post(`/instances/${instance}/suspend`, {
      form: { _csrf: await csrfOf(xu.page), reason: 'I would like a break' }, maxRedirects: 0,
    });
    assert.equal(notMine.status(), 403, 'suspending as staff');
    assert.equal((await instanceOf(instance)).events, eventsBefore, 'nothing changed');

    // The admin suspends it with a reason.
    const admin = await as('it.admin');
    const a = admin.page;
    await a.goto(`/instances/${instance}`);
    const panel = a.locator('#repair');
    await panel.waitFor();
    assert.equal(await a.getByLabel(lbl('Why resume')).count(), 0, 'nothing to resume');
    await a.getByLabel(lbl('Why suspend')).fill('Waiting for the customer’s documents <b>signed</b>');
    const suspended = await submit(a, a.getByRole('button', { name: 'Suspend', exact: true }), new RegExp(`/instances/${instance}/suspend$`));
    assert.equal(suspended.status(), 303);
    await a.waitForURL(at(`/instances/${instance}`));
    assert.match(await flash(a), /^Suspended/);
    const notice = a.locator('.alert', { hasText: 'Suspended' });
    assert.match(await notice.textContent(), /Suspended\s+since .*Sun Hao \(IT\).*Waiting for the customer’s documents <b>signed<\/b>/s,
      'who suspended it, and why, as typed');
    assert.equal(await a.locator('.alert b').count(), 0, 'the reason stays text');
    assert.match(await a.locator('.status-line').textContent(), /suspended/i, 'the status line says so');
    // While suspended only Resume is offered.
    assert.equal(await a.getByLabel(lbl('Why suspend')).count(), 0);
    assert.equal(await panel.getByRole('button', { name: 'Move', exact: true }).count(), 0);
    assert.equal(await panel.getByRole('button', { name: 'Withdraw', exact: true }).count(), 0);
    await screenshot(a, 'suspended');
    await assertCsrfEverywhere(a);
    assert.ok((await instanceOf(instance)).suspended, 'the API says suspended');

    // Staff trying to claim its task from the worklist, or to complete it: refused, saying why.
    const events = (await instanceOf(instance)).events;
    const row = await worklistRow(xu.page, register);
    const claim = await submit(xu.page, row.getByRole('button', { name: 'Claim', exact: true }), /\/claim$/);
    assert.equal(claim.status(), 409, 'claiming a task of a suspended instance');
    assert.equal((await xu.page.locator('h1').textContent()).trim(), 'Conflict');
    assert.match(await xu.page.locator('main').textContent(), /suspended/i, 'the refusal says it is suspended');
    await screenshot(xu.page, 'suspended-claim-refused');
    await xu.page.goto(`/tasks/${register}`);
    await xu.page.getByLabel(lbl('Received through')).selectOption('telephone');
    await xu.page.getByLabel(lbl('Complaint')).fill('Late delivery');
    await xu.page.getByLabel(lbl('Classification')).selectOption('general');
    await xu.page.getByLabel(lbl('Answer given to the customer')).fill('It ships today.');
    await xu.page.getByLabel(lbl('Complaint received at')).fill('2026-11-02T08:30');
    const complete = await submit(xu.page, xu.page.getByRole('button', { name: 'Complete', exact: true }), /\/complete$/);
    assert.equal(complete.status(), 409, 'completing a task of a suspended instance');
    assert.match(await xu.page.locator('main').textContent(), /suspended/i);
    assert.equal((await instanceOf(instance)).events, events, 'nothing was written');

    // Resumed: the notice goes, the timeline keeps both with their reasons.
    await a.getByLabel(lbl('Why resume')).fill('Documents received');
    await submit(a, a.getByRole('button', { name: 'Resume', exact: true }), new RegExp(`/instances/${instance}/resume$`));
    assert.match(await flash(a), /^Resumed/);
    assert.equal(await a.locator('.alert', { hasText: 'Suspended' }).count(), 0, 'no suspension notice');
    assert.doesNotMatch(await a.locator('.status-line').textContent(), /suspended/i);
    const timeline = a.locator('#timeline');
    const suspension = timeline.locator('li', { hasText: 'Suspended the instance' });
    assert.match(await suspension.textContent(), /Sun Hao \(IT\)/);
    assert.match(await suspension.textContent(), /Waiting for the customer’s documents <b>signed<\/b>/);
    const resumption = timeline.locator('li', { hasText: 'Resumed the instance' });
    assert.match(await resumption.textContent(), /Documents received/);
    assert.equal((await instanceOf(instance)).suspended ?? null, null, 'the API says running');
    await a.getByLabel(lbl('Why suspend')).waitFor();

    // Work moved and withdrawn, on an instance of its own, at a phone's width.
    const [s2, other] = await api('xu.na', 'POST', '/v1/instances',
      { procedure: 'complaint-handling', data: { customer: `Repaired ${RUN}`, contact: 'Zhao' } });
    assert.equal(s2, 201, JSON.stringify(other));
    const phone = await as('it.admin', { viewport: { width: 390, height: 844 } });
    const m = phone.page;
    await m.goto(`/instances/${other.id}`);
    await m.locator('#repair').waitFor();
    assert.ok(await overflowOf(m) <= 0, `the instance page with its repair panel fits a phone (${await overflowOf(m)}px too wide)`);
    await screenshot(m, 'repair-phone');
    await m.locator('#repair').screenshot({ path: `${SHOTS}/repair-panel-phone.png` });
    const reg = await taskAt(other.id, 'register');
    await m.getByLabel(lbl('Move the work to')).selectOption('resolve_general');
    await m.getByLabel(lbl('Which work')).selectOption(reg);
    await m.getByLabel(lbl('Why move')).fill('Registered by telephone already');
    await submit(m, m.getByRole('button', { name: 'Move', exact: true }), /\/move$/);
    assert.match(await flash(m), /^Moved/);
    const resolve = await taskAt(other.id, 'resolve_general');
    assert.equal((await apiGet('jiang.audit', `/v1/instances/${other.id}`)).tasks.length, 1, 'only the moved work is open');
    assert.match(await m.locator('#timeline').textContent(), /Registered by telephone already/);

    // The instance's only open work cannot be withdrawn: nothing would be left to do.
    const before = (await instanceOf(other.id)).events;
    await m.getByLabel(lbl('Withdraw the task')).selectOption(resolve);
    await m.getByLabel(lbl('Why withdraw')).fill('Opened by mistake');
    const refused = await submit(m, m.getByRole('button', { name: 'Withdraw', exact: true }), /\/withdraw$/);
    assert.equal(refused.status(), 409, 'withdrawing the only open work');
    assert.match(await m.locator('main').textContent(), /only open work/);
    assert.equal((await instanceOf(other.id)).events, before, 'nothing was written');

    // A recall's two parallel assessments: one withdrawn, its branch reaches the join without
    // it and the other assessment stays open.
    const [s3, recall] = await api('it.admin', 'POST', '/v1/instances',
      { procedure: 'recall', data: { product: `Roller ${RUN}`, batch_or_model: 'R-11', source: 'internal_discovery' } });
    assert.equal(s3, 201, JSON.stringify(recall));
    await m.goto(`/instances/${recall.id}`);
    await m.getByLabel(lbl('Move the work to')).selectOption('assess_scope');
    await m.getByLabel(lbl('Why move')).fill('Source confirmed by phone');
    await submit(m, m.getByRole('button', { name: 'Move', exact: true }), /\/move$/);
    assert.match(await flash(m), /^Moved/);
    const hazard = await taskAt(recall.id, 'assess_hazard');
    await taskAt(recall.id, 'estimate_losses');
    await m.getByLabel(lbl('Withdraw the task')).selectOption(hazard);
    await m.getByLabel(lbl('Why withdraw')).fill('Hazard assessed in the earlier recall');
    await submit(m, m.getByRole('button', { name: 'Withdraw', exact: true }), /\/withdraw$/);
    assert.match(await flash(m), /withdrawn/i);
    const left = (await instanceOf(recall.id)).tasks.map((t) => t.step);
    assert.deepEqual(left, ['estimate_losses'], 'the other branch is still open');
    assert.match(await m.locator('#timeline').textContent(), /Hazard assessed in the earlier recall/);
    assert.ok(await overflowOf(m) <= 0, 'still fits a phone');
    assert.deepEqual(xu.dialogs.concat(admin.dialogs, phone.dialogs), [], 'no dialog opened');
  });
});

// -------------------------------------------------------------------------------------------
test('15. change: an operator previews a migration to version 3, then migrates', async () => {
  await keepEvidence('migrate', live(), async () => {
    const instance = change.onV2;
    assert.ok(instance, 'journey 13 started an instance on version 2 (run the change journeys together)');
    assert.equal((await instanceOf(instance)).version, 2);

    // Not for a process owner who is no operator.
    const chen = await as('chen.jing');
    await chen.page.goto('/tasks');
    const refused = await chen.context.request.post('/procedures/complaint-handling/migrate', {
      form: { _csrf: await csrfOf(chen.page), from_version: '2', to_version: '3', name: 'not mine', reason: 'no', action: 'apply' },
      maxRedirects: 0,
    });
    assert.equal(refused.status(), 403, 'migrating as a process owner who is no operator');
    assert.equal((await instanceOf(instance)).version, 2);

    const admin = await as('it.admin');
    const a = admin.page;
    await a.goto('/procedures/complaint-handling');
    await Promise.all([
      a.waitForURL(at('/procedures/complaint-handling/migrate')),
      a.getByRole('link', { name: 'Move running instances to another version' }).click(),
    ]);
    assert.equal(await a.getByLabel(lbl('From version')).inputValue(), '2');
    assert.equal(await a.getByLabel(lbl('To version')).inputValue(), '3');
    assert.equal(await a.getByLabel(lbl('Plan name')).inputValue(), 'complaint-handling-v2-to-v3');
    assert.equal(await a.getByLabel(lbl('Renamed or removed steps')).evaluate((e) => e.tagName), 'TEXTAREA');
    assert.equal(await a.getByLabel(/Compute open tasks' due times again/).getAttribute('type'), 'checkbox');
    await a.getByLabel(lbl('Why')).fill('Revised complaint procedure');

    // The preview changes nothing.
    const events = (await instanceOf(instance)).events;
    await submit(a, a.getByRole('button', { name: 'Preview', exact: true }), /\/procedures\/complaint-handling\/migrate$/);
    const preview = (await a.locator('#migrate-result').textContent()).trim();
    const [, can, of] = preview.match(/^Preview: (\d+) of (\d+) instance\(s\) can move; nothing was changed\.$/) ?? [];
    assert.ok(Number(can) >= 1 && Number(of) >= Number(can), preview);
    const mine = a.locator('#outcomes li', { hasText: instance });
    assert.match(await mine.textContent(), /migrates/);
    assert.equal(await a.locator('#outcomes li').count(), Number(of), 'one line per instance');
    assert.equal(await a.getByLabel(lbl('Why')).inputValue(), 'Revised complaint procedure', 'the form is kept');
    assert.equal((await instanceOf(instance)).version, 2, 'still on version 2');
    assert.equal((await instanceOf(instance)).events, events, 'nothing written');
    await screenshot(a, 'migrate-preview');
    await assertCsrfEverywhere(a);

    // Migrate.
    await submit(a, a.getByRole('button', { name: 'Migrate', exact: true }), /\/procedures\/complaint-handling\/migrate$/);
    const ran = (await a.locator('#migrate-result').textContent()).trim();
    const [, moved, total] = ran.match(/^Migrated (\d+) of (\d+) instance\(s\)\.$/) ?? [];
    assert.equal(moved, can, `as many moved as the preview said: ${ran}`);
    assert.equal(total, of, ran);
    await screenshot(a, 'migrate-applied');
    await a.setViewportSize({ width: 390, height: 844 });
    assert.ok(await overflowOf(a) <= 0, `the migration fits a phone (${await overflowOf(a)}px too wide)`);
    await screenshot(a, 'migrate-phone');
    assert.equal((await instanceOf(instance)).version, 3);

    // Its page says version 3, and the timeline says who moved it and why.
    await Promise.all([a.waitForURL(at(`/instances/${instance}`)), mine.getByRole('link').click()]);
    assert.match(await a.locator('.status-line').textContent(), /version 3/);
    const entry = a.locator('#timeline li', { hasText: /version 2 to version 3/ });
    assert.match(await entry.textContent(), /Sun Hao \(IT\)/);
    assert.match(await entry.textContent(), /Revised complaint procedure/);
    await taskAt(instance, 'register');

    // Every history still verifies, the deployments' and the migrated instances' included.
    const jiang = await as('jiang.audit');
    await jiang.page.goto('/audit/verify');
    const verdict = (await status(jiang.page).first().textContent()).trim();
    assert.match(verdict, /verif/i);
    assert.doesNotMatch(verdict, /not verify|broken|fail/i, verdict);
  });
});

// -------------------------------------------------------------------------------------------
test('16. the worklist follows a colleague: a task claimed elsewhere leaves it without a reload', async () => {
  await keepEvidence('live-worklist', live(), async () => {
    const [st, inst] = await api('xu.na', 'POST', '/v1/instances', {
      procedure: 'complaint-handling',
      data: { customer: `Live ${RUN}`, contact: 'Ms Wu' },
    });
    assert.equal(st, 201, JSON.stringify(inst));
    const task = await taskAt(inst.id, 'register');
    const gao = await as('gao.yan');
    const row = await worklistRow(gao.page, task);
    // The page is listening before anything changes.
    await gao.page.locator('#work-list[data-listening="yes"]').waitFor({ state: 'attached' });
    const xu = await as('xu.na');
    const mine = await worklistRow(xu.page, task);
    await Promise.all([
      xu.page.waitForURL(at('/tasks')),
      mine.getByRole('button', { name: 'Claim', exact: true }).click(),
    ]);
    // Gone from Gao Yan's list without her doing anything.
    await row.waitFor({ state: 'detached' });
    assert.match(await gao.page.locator('#work-status').textContent(), /updated/);
    await screenshot(gao.page, 'worklist-live');
    // A new task for her roles appears the same way.
    const [st2, inst2] = await api('xu.na', 'POST', '/v1/instances', {
      procedure: 'complaint-handling',
      data: { customer: `Live 2 ${RUN}`, contact: 'Mr Qin' },
    });
    assert.equal(st2, 201, JSON.stringify(inst2));
    await gao.page.locator(`tr[data-task="${await taskAt(inst2.id, 'register')}"]`).waitFor();
  });
});

test('17. the admin sees the outbox: waiting, dead and sent deliveries, and the subscriptions', async () => {
  await keepEvidence('deliveries', live(), async () => {
    const admin = await as('it.admin');
    await admin.page.getByRole('navigation').getByRole('link', { name: 'Deliveries', exact: true }).click();
    await admin.page.waitForURL(at('/admin/deliveries'));
    assert.equal((await admin.page.locator('h1').textContent()).trim(), 'Deliveries');
    for (const tab of ['Dead', 'Sent', 'Waiting']) {
      await Promise.all([
        admin.page.waitForURL(at('/admin/deliveries')),
        admin.page.getByRole('link', { name: tab, exact: true }).click(),
      ]);
      assert.equal(await admin.page.getByRole('link', { name: tab, exact: true }).getAttribute('aria-current'), 'true');
    }
    // The subscription's receiver is never there: its calls wait, with the reason shown
    // once the first try has failed (the page is read again until then).
    const [st, inst] = await api('xu.na', 'POST', '/v1/instances', {
      procedure: 'complaint-handling',
      data: { customer: `Outbox ${RUN}`, contact: 'Mr Fu' },
    });
    assert.equal(st, 201, JSON.stringify(inst));
    const waiting = admin.page.locator('table.deliveries tbody tr', { hasText: 'hook:crm' });
    for (let i = 0; i < 100 && (await waiting.locator('.error').count()) === 0; i += 1) {
      await admin.page.waitForTimeout(100);
      await admin.page.reload();
    }
    assert.match(await waiting.first().textContent(), /instance\.started|task\.completed/);
    assert.match(await waiting.first().locator('.error').textContent(), /error|connect|refused/i);
    const subs = admin.page.locator('table', { hasText: 'http://127.0.0.1:9/sopflow' });
    assert.match(await subs.textContent(), /instance\.started, task\.completed/);
    assert.doesNotMatch(await admin.page.content(), /whsec_/, 'no secret on the page');
    await screenshot(admin.page, 'deliveries');
    // A subscription made on the page: its secret shown once, listed as made over the API
    // by the admin, then removed.
    await admin.page.getByLabel(/^Id\b/).fill('erp');
    await admin.page.getByLabel(/^Address/).fill('http://127.0.0.1:9/erp');
    await admin.page.getByLabel('task.breached', { exact: true }).check();
    await admin.page.getByLabel('The receiver is on this machine or the private network').check();
    await Promise.all([
      admin.page.waitForURL(at('/admin/deliveries')),
      admin.page.getByRole('button', { name: 'Make subscription' }).click(),
    ]);
    assert.match(await admin.page.getByRole('status').textContent(), /Subscription erp made\..*whsec_[A-Za-z0-9+/=]{32}/);
    const made = admin.page.locator('table tbody tr', { hasText: 'http://127.0.0.1:9/erp' });
    assert.match(await made.textContent(), /task\.breached.*the API, by it\.admin/s);
    await screenshot(admin.page, 'deliveries-new-subscription');
    await admin.page.reload();
    assert.doesNotMatch(await admin.page.content(), /whsec_/, 'the secret is shown once');
    await Promise.all([
      admin.page.waitForURL(at('/admin/deliveries')),
      made.getByRole('button', { name: 'Remove' }).click(),
    ]);
    assert.match(await admin.page.getByRole('status').textContent(), /Subscription erp removed/);
    assert.equal(await made.count(), 0);
    // The file's subscription has no Remove button: it is changed in the file.
    assert.equal(await subs.locator('tr', { hasText: 'http://127.0.0.1:9/sopflow' }).getByRole('button').count(), 0);
    // An internal address without the tick is refused with the reason; nothing is made.
    await admin.page.getByLabel(/^Id\b/).fill('meta');
    await admin.page.getByLabel(/^Address/).fill('http://169.254.169.254/latest');
    await admin.page.getByLabel('every event', { exact: true }).check();
    const [refused] = await Promise.all([
      admin.page.waitForResponse((r) => r.url().endsWith('/admin/webhooks')),
      admin.page.getByRole('button', { name: 'Make subscription' }).click(),
    ]);
    assert.equal(refused.status(), 422);
    assert.match(await admin.page.locator('main').textContent(), /169\.254\.169\.254.*private network/s);
    await admin.page.goto('/admin/deliveries');
    assert.equal(await admin.page.locator('table tbody tr', { hasText: '169.254.169.254' }).count(), 0);
    // Not for staff: the page is refused and the link is not offered.
    const xu = await as('xu.na');
    assert.equal(await xu.page.getByRole('link', { name: 'Deliveries', exact: true }).count(), 0);
    const res = await xu.page.goto('/admin/deliveries');
    assert.equal(res.status(), 403);
  });
});
