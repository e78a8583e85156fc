// The console's story in a real browser, JavaScript off: a referral from Zambia reaches
// Malawi; the Malawian caseworker opens it, accepts it, starts work and closes it with an outcome; the
// same pages in Arabic, right to left; an enforcement-tagged client opens every part of the
// console and sees no child's data anywhere. Run by tests/browser.rs.

import { expect, main } from './lib.mjs';

main(async (run) => {
  const { referral } = run.config;

  // The Malawian caseworker works the referral that arrived.
  const mw = await run.user('mw-caseworker');
  mw.step('opens the console');
  const home = await mw.open('/console/');
  expect(home === 200, `the console opens (status ${home}: ${mw.text().slice(0, 300)})`);
  mw.sees('MW-DSW', 'the home page names the node');
  await mw.screenshot('en-home');

  mw.step('opens the inbox from the navigation');
  await mw.click('link', 'Inbox');
  await mw.until('/console/inbox', (t) => t.includes(referral.from), 'the referral from Zambia');
  await mw.screenshot('en-inbox');

  mw.step('opens the item');
  const link = mw.page.locator('a[href^="/console/inbox/"]').first();
  const itemPath = await link.getAttribute('href');
  expect(itemPath && !itemPath.includes(referral.given), 'the item link names no child');
  await mw.click('link', (await link.innerText()).trim());
  mw.sees(referral.given, 'the item shows the child the caseworker may see');
  mw.sees(referral.case, "the item shows the sender's case reference");
  await mw.screenshot('en-item');

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

  // The same caseworker's pages in Arabic, right to left.
  const ar = await run.user('mw-caseworker', 'ar');
  ar.step('opens the console in Arabic');
  await ar.open('/console/');
  expect((await ar.page.getAttribute('html', 'dir')) === 'rtl', 'Arabic is right to left');
  expect((await ar.page.getAttribute('html', 'lang')) === 'ar', 'the page says it is Arabic');
  await ar.screenshot('ar-home');
  await ar.open(itemPath);
  ar.sees(referral.given, 'the item in Arabic');
  await ar.screenshot('ar-item');
  await ar.close();

  // Family tracing: a Zambian record and a Malawian request match; both caseworkers
  // confirm; the agreed details show side by side.
  const { tracing } = run.config;
  const until = new Date(Date.now() + 60 * 86_400_000).toISOString().slice(0, 10);
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
  await mwTracer.screenshot('en-tracing');

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
    '/console/tracing',
    ...Object.values(matchPaths),
    '/console/audit',
    '/console/statistics',
    '/console/admin',
    ...offered,
  ]) {
    await en.open(path);
  }
  await en.close();
});
