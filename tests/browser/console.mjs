// The console's story in a real browser, JavaScript off. A Zambian border committee fills in
// a referral to Malawi, checks the consent before sending, fixes what it does not cover and
// sends it; a Malawian caseworker of the receiving unit opens it, accepts it, starts work
// and closes it with an outcome; the committee sees the outcome and Malawi's signed receipt.
// The same pages in Arabic, right to left. A tracing record and a tracing request match,
// both sides confirm, the agreed details show side by side. Malawi's auditor verifies the
// log export, and sees which entry one changed byte breaks. An enforcement-tagged client
// opens every part of the console and sees no child's data anywhere. Run by
// tests/browser.rs.

import fs from 'node:fs';
import path from 'node:path';
import { expect, main } from './lib.mjs';

main(async (run) => {
  const { referral } = run.config;
  const until = new Date(Date.now() + 60 * 86_400_000).toISOString().slice(0, 10);

  // The Zambian border committee refers a child to Malawi: it fills in the form, checks the
  // consent before sending, fixes what the consent does not cover, and sends.
  const zm = await run.user('zm-committee');
  zm.step('opens the console');
  const home = await zm.open('/console/');
  expect(home === 200, `the console opens (status ${home}: ${zm.text().slice(0, 300)})`);
  zm.sees('ZM-DSW', 'the home page names the node');
  await zm.screenshot('en-home');

  zm.step('opens the new referral form');
  await zm.click('link', 'New referral');
  await zm.form([
    ['recipient', 'MW-DSW'],
    ['recipient_unit', referral.unit],
    ['kind', 'referral'],
    ['purpose', 'service-referral'],
    ['case_reference', referral.case],
    ['requested_services', 'interim-care, family-tracing'],
    ['given_names', referral.given],
    ['family_names', referral.family],
    ['estimated_birth_year', '2013'],
    ['migratory_status', 'unaccompanied'],
    ['urgency', 'high'],
    ['conditions', 'asthma'],
    ['consent_id', referral.consent],
    ['given_by', 'guardian'],
    ['child_views_recorded', 'yes'],
    ['consent_purpose', 'service-referral'],
    ['consent_category', 'identity'],
    ['consent_category', 'protection-concerns'],
    ['consent_expires', until],
  ]);
  zm.step('checks the consent before sending');
  await zm.click('button', 'Check consent');
  zm.sees('The consent does not cover this referral', 'the pre-check finds gaps');
  zm.sees('The category Health is filled in, but the consent does not cover it.', 'the uncovered category');
  zm.sees('The consent does not name MW-DSW as a recipient.', 'the uncovered recipient');
  await zm.screenshot('en-compose-check');
  expect(
    (await zm.page.locator('[name="given_names"]').inputValue()) === referral.given,
    'nothing typed is lost by the check',
  );

  zm.step('leaves out the health details, names Malawi in the consent, checks again');
  await zm.form([
    ['conditions', ''],
    ['consent_recipient', 'MW-DSW'],
  ]);
  await zm.click('button', 'Check consent');
  zm.sees('The consent covers this referral', 'the consent now covers it');
  zm.step('sends');
  await zm.click('button', 'Send');
  zm.sees('Sent. Its delivery is shown below.', 'the referral is sent');
  const sentPath = new URL(zm.page.url()).pathname;
  expect(!sentPath.includes(referral.given), 'the sent item link names no child');
  run.facts.referral_id = sentPath.split('/').pop();
  await zm.until(sentPath, (t) => t.includes('Signed by MW-DSW'), "Malawi's signed receipt");
  await zm.screenshot('en-sent');

  // The Malawian caseworker of the receiving unit works the referral that arrived.
  const mw = await run.user('mw-caseworker');
  mw.step('opens the inbox from the navigation');
  await mw.open('/console/');
  await mw.click('link', 'Inbox');
  await mw.until('/console/inbox', (t) => t.includes('ZM-DSW'), 'the referral from Zambia');

  mw.step('opens the item');
  const link = mw.page.locator('a[href^="/console/inbox/"]').first();
  const itemPath = await link.getAttribute('href');
  expect(itemPath && !itemPath.includes(referral.given), 'the item link names no child');
  await mw.click('link', (await link.innerText()).trim());
  mw.sees(referral.given, 'the item shows the child the caseworker may see');
  mw.sees(referral.case, "the item shows the sender's case reference");

  mw.step('accepts');
  await mw.click('button', 'Accept');
  mw.sees('Accepted. The sender is told.', 'the acceptance is confirmed');
  mw.step('starts work');
  await mw.click('button', 'Start work');
  mw.sees('Work started. The sender is told.', 'the start is confirmed');
  mw.step('closes with an outcome');
  await mw.fill('Outcome code', 'reunified');
  await mw.click('button', 'Close');
  mw.sees('Closed. The sender is told.', 'the closure is confirmed');
  mw.sees('reunified', 'the history shows the outcome');
  await mw.screenshot('en-item-closed');
  await mw.close();

  // The Zambian committee sees the outcome from the other side.
  zm.step('sees the outcome on the sent item');
  await zm.until(sentPath, (t) => t.includes('reunified'), "Malawi's outcome");
  await zm.close();

  // The committee's and the caseworker's pages in Arabic, right to left.
  const zmAr = await run.user('zm-committee', 'ar');
  zmAr.step('opens the new referral form and the sent item in Arabic');
  await zmAr.open('/console/referrals/new');
  expect((await zmAr.page.getAttribute('html', 'dir')) === 'rtl', 'Arabic is right to left');
  expect((await zmAr.page.getAttribute('html', 'lang')) === 'ar', 'the page says it is Arabic');
  await zmAr.screenshot('ar-compose');
  await zmAr.open(sentPath);
  await zmAr.screenshot('ar-sent-closed');
  await zmAr.close();

  // The same caseworker's pages in Arabic, right to left.
  const ar = await run.user('mw-caseworker', 'ar');
  ar.step('opens the item in Arabic');
  await ar.open(itemPath);
  ar.sees(referral.given, 'the item in Arabic');
  await ar.close();

  // The guardian withdraws consent: the committee withdraws it in the console, Malawi's
  // signed receipt of the notice comes back, and Malawi's copy is purged.
  const zmW = await run.user('zm-committee');
  zmW.step('finds the referral among the sent items');
  await zmW.open('/console/');
  await zmW.click('link', 'Sent');
  zmW.sees('MW-DSW', 'the sent list shows the referral');
  zmW.step('withdraws the consent');
  await zmW.open(sentPath);
  await zmW.check('I confirm that this consent has been withdrawn and the data must be deleted everywhere.');
  await zmW.click('button', 'Withdraw consent');
  zmW.sees('Consent withdrawn.', 'the withdrawal is done');
  zmW.sees('Withdrawal notices sent', 'the notices are listed');
  const notice = zmW.page.locator('main a[href^="/console/sent/"]').first();
  const noticePath = await notice.getAttribute('href');
  zmW.step("follows the notice to Malawi's signed receipt");
  await zmW.until(noticePath, (t) => t.includes('Signed by MW-DSW'), "Malawi's receipt of the withdrawal");
  await zmW.close();
  const mwP = await run.user('mw-caseworker');
  mwP.step('sees the item purged');
  await mwP.until(itemPath, (t) => t.includes('was purged'), 'the purge at Malawi');
  expect(!mwP.text().includes(referral.given), 'a purged item shows no child');
  await mwP.close();

  // Family tracing: a Zambian record and a Malawian request match; both caseworkers
  // confirm; the agreed details show side by side.
  const { tracing } = run.config;
  const zmTracer = await run.user('zm-caseworker');
  zmTracer.step('registers a child in care');
  await zmTracer.open('/console/tracing');
  await zmTracer.form([...tracing.record, ['consent_until', until]]);
  await zmTracer.click('button', 'Register');
  zmTracer.sees('Registered.', 'the record is registered');

  const mwTracer = await run.user('mw-caseworker');
  mwTracer.step("registers a family's request");
  await mwTracer.open('/console/tracing');
  await mwTracer.form([...tracing.request, ['consent_until', until]]);
  await mwTracer.click('button', 'Register');
  mwTracer.sees('Registered.', 'the request is registered');

  let matchPaths = {};
  for (const [tracer, who] of [
    [mwTracer, 'mw'],
    [zmTracer, 'zm'],
  ]) {
    tracer.step('reviews the match and confirms it');
    await tracer.until('/console/tracing', (t) => t.includes('Likely matches') && t.includes('Open'), 'a likely match');
    await tracer.click('link', 'Open');
    matchPaths[who] = new URL(tracer.page.url()).pathname;
    tracer.sees('Until both sides confirm, only this strength is known', 'nothing of the other case before confirmation');
    await tracer.check('I checked this match against our case file and confirm it');
    await tracer.click('button', 'Confirm');
    tracer.sees('Confirmed. The other side is told.', 'the confirmation');
  }
  for (const [tracer, who, theirs] of [
    [mwTracer, 'mw', tracing.record_name],
    [zmTracer, 'zm', tracing.request_name],
  ]) {
    tracer.step('sees the agreed details side by side');
    await tracer.until(matchPaths[who], (t) => t.includes('The agreed details, side by side') && t.includes(theirs), "the other side's agreed details");
  }
  await mwTracer.screenshot('en-tracing-agreed');
  await mwTracer.close();
  await zmTracer.close();

  // Malawi's auditor checks the log without writing code: the export downloaded from the
  // console verifies; with one byte changed inside one entry, the page names that entry.
  const auditor = await run.user('mw-auditor');
  auditor.step('opens the audit log');
  await auditor.open('/console/');
  await auditor.click('link', 'Audit log');
  auditor.sees('Latest signed checkpoint', 'the checkpoint');
  auditor.step('downloads the export');
  const exported = await auditor.download('Download the log export', 'export.jsonl');
  const lines = fs.readFileSync(exported, 'utf8').split('\n');
  const entries = lines.filter((l) => l.startsWith('{"type":"entry"'));
  expect(entries.length >= 4, `the export holds ${entries.length} entries`);
  const chosen = entries[Math.floor(entries.length / 2)];
  const index = JSON.parse(chosen).index;
  const at = chosen.indexOf('"entry":"') + '"entry":"'.length + 8;
  const altered = chosen.slice(0, at) + (chosen[at] === 'A' ? 'B' : 'A') + chosen.slice(at + 1);
  const alteredFile = path.join(run.config.workdir, 'altered.jsonl');
  fs.writeFileSync(alteredFile, lines.map((l) => (l === chosen ? altered : l)).join('\n'));

  auditor.step('verifies the export as downloaded');
  await auditor.open('/console/audit/verify');
  await auditor.upload('Export file', exported);
  await auditor.click('button', 'Verify');
  auditor.sees('The export is valid', 'the export verifies');

  auditor.step(`verifies it with one byte changed in entry ${index}`);
  await auditor.open('/console/audit/verify');
  await auditor.upload('Export file', alteredFile);
  await auditor.click('button', 'Verify');
  auditor.sees('The export does NOT verify.', 'the altered export fails');
  const bad = (await auditor.page.locator('strong.bad-entry').innerText()).trim();
  expect(bad === String(index), `the page names entry ${index} as the first bad one, not ${bad}`);
  await auditor.screenshot('en-audit-verify-failed');
  auditor.step('reads the refusals, the reconciliation form and the statistics');
  await auditor.open('/console/audit');
  await auditor.form([['refusals', '1']]);
  await auditor.click('button', 'Show');
  await auditor.open('/console/audit/reconcile');
  await auditor.click('link', 'Statistics');
  await auditor.screenshot('en-statistics');
  await auditor.open('/console/admin/keys');
  await auditor.close();

  // Malawi's administrator reads the node's health, its peers and its keys.
  const admin = await run.user('mw-admin');
  admin.step('opens the administration page');
  await admin.open('/console/');
  await admin.click('link', 'Administration');
  admin.sees('Node health', 'the health');
  admin.sees('ZM-DSW', 'the peers');
  await admin.screenshot('en-admin');
  await admin.close();

  // An enforcement-tagged client sees no child's data anywhere.
  const en = await run.user('zm-immigration');
  en.step('opens every part of the console');
  await en.open('/console/');
  // Every link its navigation offers, and every part it does not.
  const offered = [];
  for (const a of await en.page.locator('header nav a').all()) {
    offered.push(await a.getAttribute('href'));
  }
  for (const path of [
    '/console/',
    '/console/inbox',
    '/console/inbox/1',
    '/console/sent',
    sentPath,
    '/console/tracing',
    ...Object.values(matchPaths),
    '/console/audit',
    '/console/statistics',
    '/console/admin',
    '/console/audit/verify',
    '/console/statistics.csv',
    ...offered,
  ]) {
    await en.open(path);
  }
  await en.close();
});
