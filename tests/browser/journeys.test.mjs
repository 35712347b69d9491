// The web app's journeys, end to end in Chromium: people sign in by typing their token, click
// through the pages and submit the forms. The JSON API (bearer token) checks what a page did or
// did not change, and sets the scene only where the scene is not the point. Each journey makes
// its own instances, so they run against one server in any order (the clock journey, which
// moves due times, goes last). Run by scripts/browser-test.sh (see README.md).
//
// Nothing here sleeps: every step waits for the navigation, response or element it needs.
// The server runs on a manual clock, so due times never move under a test.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import {
  BASE_URL, RUN, UUID, at, launch, signIn, screenshot, submit, api, apiGet, taskAt, idIn,
  csrfOf, keepEvidence, escapeRe, token,
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
