import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AuditEvent } from 'fhir/r4.js';
import type { Browser, Page } from 'playwright-core';
import { Agent, fetch } from 'undici';
import { ATTR } from '../src/saml/mapping.ts';
import { ViewerSessions } from '../src/viewer/session.ts';
import { chromiumMissing, launchChromium, SCREENSHOTS } from './helpers/browser.ts';
import { secretClient } from './helpers/fhir.ts';
import { LoginDriver } from './helpers/login-driver.ts';
import { addPerson } from './helpers/people.ts';
import { createIdp, hl7Role, samlAssertion, samlResponse, type TestIdp } from './helpers/saml-idp.ts';
import {
  ARTS,
  BSN,
  BSN_TWICE,
  ok,
  startZorgviewerNetwork,
  TJONGERSCHANS,
  UMCG,
  WORKFLOW_ID,
  type ZorgviewerNetwork,
} from './helpers/zorgviewer.ts';

// Seed 001, part 2: the professional opens the viewer from their EHR with a SAML single sign-on (VIPLive,
// Zorgplatform), the viewer shows the merged record in a real Chromium, and every bad assertion is refused.
let net: ZorgviewerNetwork;
let viplive: TestIdp;
let zorgplatform: TestIdp;
let stranger: TestIdp;
let acs: { acsUrl: string; entityId: string };
let agent: Agent;

const VIPLIVE_ORG = '2.16.840.1.113883.2.4.3.164.2.1.2';

/** The seed's VIPLive attributes for J. Fictief, looked up by L. Arts. */
const vipAttributes = (over: Record<string, string | { xml: string }> = {}) => ({
  [ATTR.organization]: VIPLIVE_ORG,
  [ATTR.role]: hl7Role(ARTS.role),
  [ATTR.professionalInitials]: 'L.',
  [ATTR.professionalFamily]: 'Arts',
  [ATTR.clientInitials]: 'J.',
  [ATTR.clientFamily]: 'Fictief',
  [ATTR.clientBirthdate]: '19700101',
  [ATTR.clientBsn]: BSN_TWICE,
  ...over,
});

const vip = (o: Partial<Parameters<typeof samlResponse>[1]> = {}) =>
  samlResponse(viplive, {
    acsUrl: acs.acsUrl,
    audience: acs.entityId,
    nameId: ARTS.id,
    attributes: vipAttributes(),
    ...o,
  });

const zp = (attributes: Record<string, string | { xml: string }>) =>
  samlResponse(zorgplatform, {
    acsUrl: acs.acsUrl,
    audience: acs.entityId,
    nameId: ARTS.id,
    attributes: {
      [ATTR.organization]: `urn:oid:${TJONGERSCHANS}`,
      [ATTR.role]: ARTS.role,
      [ATTR.name]: 'L. Arts',
      [ATTR.purposeOfUse]: 'TREATMENT',
      ...attributes,
    },
  });

/** Posts a SAMLResponse to the ACS the way a browser form would, without following the page. */
const post = (saml: string) =>
  fetch(acs.acsUrl, {
    method: 'POST',
    dispatcher: agent,
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ SAMLResponse: saml }).toString(),
    redirect: 'manual',
  });

/** Viewer events with this code written by the hub (110110 = a source was queried, 110113 = Security Alert). */
async function hubEvents(code: string): Promise<AuditEvent[]> {
  const { events } = await net.hub.store.audit.search({ limit: 10_000, offset: 0 });
  return events.map((e) => JSON.parse(e) as AuditEvent).filter((e) => e.type?.code === code);
}

before(async () => {
  // The contract commands as processes are proven in zorgviewer.test.ts; here the same functions run in-process.
  net = await startZorgviewerNetwork({ inProcess: true });
  agent = new Agent({ connect: { ca: net.hub.ca } });
  [viplive, zorgplatform, stranger] = await Promise.all([
    createIdp('https://viplive.test/idp'),
    createIdp('https://sts.zorgplatform.test'),
    createIdp('https://stranger.test/idp'),
  ]);
  const pem = (name: string, idp: TestIdp) => {
    const file = join(net.tmp, `${name}.pem`);
    writeFileSync(file, idp.certPem);
    return file;
  };
  acs = await ok(
    net.hub.dataDir,
    ...['viewer', 'idp', 'add', '--name', 'VIPLive', '--profile', 'viplive'],
    ...['--entity-id', viplive.entityId, '--cert', pem('viplive', viplive)],
  );
  await ok(
    net.hub.dataDir,
    ...['viewer', 'idp', 'add', '--name', 'Zorgplatform', '--profile', 'zorgplatform'],
    ...['--entity-id', zorgplatform.entityId, '--cert', pem('zp', zorgplatform)],
    ...['--task-fhir-base', `${net.srcA.base}/fhir/ehr`, '--task-client-id', 'rivo-zorgviewer'],
    ...['--task-ca', join(net.srcA.dataDir, 'pki', 'ca.pem')],
  );
  // J. Fictief consented to sharing by Tjongerschans only; T.E.S.T. Zorgviewer by both.
  await net.consent(BSN_TWICE, TJONGERSCHANS);
  await net.consent(BSN, TJONGERSCHANS);
  await net.consent(BSN, UMCG);
});

after(async () => {
  await agent?.close();
  await net?.stop();
});

describe('viewer idp add / list', () => {
  test('prints the ACS URL and the viewer entity id; list shows both IdPs', async () => {
    assert.equal(acs.acsUrl, `${net.hub.base}/viewer/saml/acs`);
    assert.equal(acs.entityId, `${net.hub.base}/viewer/saml`);
    const list = await ok<{ name: string; profile: string }[]>(net.hub.dataDir, 'viewer', 'idp', 'list');
    assert.deepEqual(list.map((i) => [i.name, i.profile]).sort(), [
      ['VIPLive', 'viplive'],
      ['Zorgplatform', 'zorgplatform'],
    ]);
  });
});

describe('SAML launch: every bad assertion is refused with a clear page and a Security Alert, and reaches no source', () => {
  const billionLaughs =
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>';
  const xxe = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>';
  const cases: [string, () => string, RegExp][] = [
    ['unsigned', () => vip({ sign: 'none' }), /signature/],
    ['signed with another IdP key', () => vip({ signer: stranger }), /signature/],
    [
      'an unknown IdP',
      () =>
        samlResponse(stranger, {
          acsUrl: acs.acsUrl,
          audience: acs.entityId,
          nameId: 'x',
          attributes: vipAttributes(),
        }),
      /not from a registered identity provider/,
    ],
    ['expired', () => vip({ notBefore: -900, notOnOrAfter: -600 }), /expired/],
    ['not yet valid', () => vip({ notBefore: 600, notOnOrAfter: 900 }), /not yet valid/],
    ['wrong audience', () => vip({ audience: 'https://elsewhere.test/sp' }), /Audience/],
    ['wrong recipient', () => vip({ recipient: 'https://elsewhere.test/acs' }), /Recipient/],
    ['wrong destination', () => vip({ destination: 'https://elsewhere.test/acs', sign: 'response' }), /Destination/],
    [
      'a BSN failing the 11-test',
      () => vip({ attributes: vipAttributes({ [ATTR.clientBsn]: '123456789' }) }),
      /ongeldig of nog niet gevalideerd BSN/,
    ],
    [
      'a role outside SNOMED CT',
      () => vip({ attributes: vipAttributes({ [ATTR.role]: hl7Role('01.015', '2.16.840.1.113883.2.4.15.111') }) }),
      /not SNOMED CT/,
    ],
    ['a workflow id without a Task', () => zp({ [ATTR.workflowId]: 'no-such-workflow' }), /no single Task/],
    ['a DTD with entity expansion (billion laughs)', () => vip({ prolog: billionLaughs }), /DTD/],
    ['an external entity (XXE)', () => vip({ prolog: xxe }), /DTD/],
  ];

  test('each case', async () => {
    const queriedBefore = (await hubEvents('110110')).length;
    const alertsBefore = (await hubEvents('110113')).length;
    for (const [name, make, reason] of cases) {
      const res = await post(make());
      assert.equal(res.status, 403, name);
      assert.equal(res.headers.get('set-cookie'), null, `${name}: no session`);
      const html = await res.text();
      assert.match(html, reason, name);
      assert.doesNotMatch(html, /at \w+ \(|node_modules|Error:/, `${name}: no internals`);
    }
    const alerts = (await hubEvents('110113')).slice(alertsBefore);
    assert.equal(alerts.length, cases.length, 'one Security Alert per refused launch');
    assert.equal((await hubEvents('110110')).length, queriedBefore, 'no source was queried');
  });

  test('a replayed assertion is refused the second time', async () => {
    const saml = vip();
    assert.equal((await post(saml)).status, 200);
    const again = await post(saml);
    assert.equal(again.status, 403);
    assert.match(await again.text(), /already used/);
  });

  test('an assertion signed on the Response instead of the Assertion is accepted', async () => {
    const res = await post(vip({ sign: 'response' }));
    assert.equal(res.status, 200);
    assert.match(
      res.headers.get('set-cookie') ?? '',
      /^cv_viewer=[\w-]{43}; Path=\/viewer; HttpOnly; Secure; SameSite=Strict/,
    );
  });
});

describe('the viewer in Chromium', { skip: chromiumMissing }, () => {
  let browser: Browser;
  before(async () => {
    const serverCert = (dir: string) => readFileSync(join(dir, 'pki', 'server.pem'), 'utf8');
    // The hub, and source A acting as the EHR that launches the viewer (its login page).
    browser = await launchChromium(serverCert(net.hub.dataDir), serverCert(net.srcA.dataDir));
  });
  after(async () => browser?.close());

  /** The IdP's auto-posting form, as an IdP-initiated SSO delivers it. */
  async function launch(page: Page, saml: string): Promise<void> {
    await page.setContent(
      `<form method="post" action="${acs.acsUrl}"><input type="hidden" name="SAMLResponse" value="${saml}"><button id="go">Zorgviewer</button></form>`,
    );
    await page.click('#go');
  }

  const noHorizontalScroll = (page: Page) =>
    page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);

  test("VIPLive: J. Fictief's record from the consenting source, with the source column and the high chloride flagged", async () => {
    for (const [label, viewport] of [
      ['1280', { width: 1280, height: 900 }],
      ['375', { width: 375, height: 740 }],
    ] as const) {
      const context = await browser.newContext({ viewport });
      const page = await context.newPage();
      await launch(page, vip());
      await page.waitForURL(`${net.hub.base}/viewer/`);
      await page.waitForSelector('body[data-loaded="true"]');
      const banner = await page.textContent('#banner');
      assert.match(banner ?? '', /J\. Fictief/);
      assert.match(banner ?? '', /999911120/);
      assert.match((await page.textContent('#who')) ?? '', /L\. Arts/);
      const sources = await page.textContent('#sources');
      assert.match(sources ?? '', /Tjongerschans/);
      assert.match((await page.textContent('li.state-no-consent')) ?? '', /UMCG.*Geen toestemming/);
      const headers = await page.$$eval('#panel th', (ths) => ths.map((th) => th.textContent?.replace(/ \(.*\)$/, '')));
      assert.deepEqual(headers, [
        'Bron',
        'Datum',
        'Test',
        'Testuitslag',
        'Interpretatie',
        'Onder- en bovengrens',
        'Materiaal',
        'Status',
      ]);
      const chloride = await page.$eval('tr[data-key$="/f-cl"]', (tr) =>
        Array.from(tr.querySelectorAll('td'), (td) => td.textContent),
      );
      assert.deepEqual(chloride, [
        'Tjongerschans',
        '2026-11-24',
        'Chloride',
        '109 mmol/L',
        '▲ Hoog',
        '99 .. 108 mmol/L',
        'Serum',
        'Definitief',
      ]);
      assert.equal(await page.$eval('tr[data-key$="/f-cl"] td:nth-child(5)', (td) => td.className), 'flag-high');
      assert.equal(await page.$$eval('#panel tbody tr', (rows) => rows.length), 2);
      assert.ok(await noHorizontalScroll(page), `no horizontal scroll at ${label} px`);
      await page.screenshot({ path: join(SCREENSHOTS, `zorgviewer-${label}.png`), fullPage: true });
      await context.close();
    }
  });

  test('keyboard: tabs move with the arrow keys; English on request; sign-out ends the session', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    await launch(page, vip());
    await page.waitForSelector('body[data-loaded="true"]');
    await page.focus('#tab-labs');
    await page.keyboard.press('ArrowRight');
    assert.equal(await page.$eval('#tab-vitals', (b) => b.getAttribute('aria-selected')), 'true');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'tab-vitals');
    await page.click('#lang');
    assert.equal(await page.textContent('#tab-labs'), 'Lab results');
    await page.click('#tab-labs');
    assert.equal(await page.textContent('tr[data-key$="/f-cl"] td:last-child'), 'Final');
    assert.equal(await page.evaluate(() => document.documentElement.lang), 'en');
    const [cookie] = await context.cookies(`${net.hub.base}/viewer/`);
    assert.equal(cookie?.name, 'cv_viewer');
    assert.equal(cookie?.httpOnly, true);
    assert.equal(cookie?.sameSite, 'Strict');
    await page.click('#logout');
    await page.waitForSelector('h1');
    assert.match((await page.textContent('h1')) ?? '', /afgemeld/);
    const again = await page.goto(`${net.hub.base}/viewer/`);
    assert.equal(again?.status(), 401, 'the session is gone');
    // The session is gone on the server, not only from the browser: its old cookie no longer works.
    const old = await fetch(`${net.hub.base}/viewer/api/session`, {
      dispatcher: agent,
      headers: { cookie: `cv_viewer=${cookie?.value}` },
    });
    assert.equal(old.status, 401);
    await context.close();
  });

  test('Zorgplatform: the workflow Task names the patient; both consenting sources answer', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    await launch(page, zp({ [ATTR.workflowId]: WORKFLOW_ID }));
    await page.waitForSelector('body[data-loaded="true"]');
    assert.match((await page.textContent('#banner')) ?? '', /T\.E\.S\.T\. Zorgviewer.*000004881/s);
    const states = await page.$$eval('#sources li', (lis) => lis.map((li) => li.className));
    assert.deepEqual(states.sort(), ['source state-ok', 'source state-ok']);
    const critical = await page.$eval('tr[data-key$="/b-k"] td:nth-child(5)', (td) => td.textContent);
    assert.equal(critical, '‼ Kritiek');
    // Newest first, and the date header flips the order.
    const dates = () => page.$$eval('#panel tbody td:nth-child(2)', (tds) => tds.map((td) => td.textContent ?? ''));
    const newestFirst = await dates();
    assert.deepEqual(newestFirst, [...newestFirst].sort().reverse());
    assert.notEqual(newestFirst[0], newestFirst.at(-1), 'labs on more than one date');
    await page.click('#sort-date');
    assert.deepEqual(await dates(), [...newestFirst].reverse());
    await page.selectOption('#filter', `urn:oid:${UMCG}`);
    const shown = await page.$$eval('#panel tbody td:first-child', (tds) => [
      ...new Set(tds.map((td) => td.textContent)),
    ]);
    assert.deepEqual(shown, ['UMCG']);
    await page.selectOption('#filter', '');
    await page.click('#tab-documents');
    const [popup] = await Promise.all([page.waitForEvent('popup'), page.click('#panel a')]);
    await popup.waitForLoadState();
    const pdf = await popup.evaluate(async () => {
      const res = await fetch(location.href);
      return { type: res.headers.get('content-type'), size: (await res.arrayBuffer()).byteLength };
    });
    assert.deepEqual(pdf, { type: 'application/pdf', size: 629 });
    await context.close();
  });

  test("EHR launch from carevault's own authorization server as a Practitioner (seq-1-fhir)", async () => {
    const ehr = net.srcA;
    const app = await ehr.register('zorgviewer-app', {
      auth: 'client_secret_basic',
      redirectUri: [`${net.hub.base}/viewer/launch/callback`],
      scope: 'launch user/*.rs',
      name: 'Zorgviewer',
    });
    const host = await secretClient(ehr, 'ehr-host', 'system/*.rs');
    await ok(ehr.dataDir, 'grant', 'add', '--partition', 'ehr', '--client', 'ehr-host', '--scope', 'system/*.rs');
    await addPerson(ehr, 'larts', 'correct horse battery staple');
    const registered = await ok<{ launchUrl: string; auth: string }>(
      net.hub.dataDir,
      ...['viewer', 'app', 'add', '--ehr', `${ehr.base}/fhir/ehr`, '--client-id', 'zorgviewer-app'],
      ...['--client-secret', app.client_secret as string, '--ca', join(ehr.dataDir, 'pki', 'ca.pem')],
    );
    assert.equal(registered.auth, 'client_secret_basic');
    /** The EHR host's launch context for the viewer app (POST /oauth/launch). */
    const ehrLaunch = async () => {
      const res = await ehr.fetch(`${ehr.base}/oauth/launch`, {
        method: 'POST',
        dispatcher: ehr.agent(),
        headers: { authorization: `Bearer ${host.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          partition: 'ehr',
          client_id: 'zorgviewer-app',
          patient: 'test-zv',
          fhirUser: 'Practitioner/larts',
        }),
      });
      return (await res.json()) as { launch: string; iss: string };
    };
    const { launch, iss } = await ehrLaunch();
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    await page.goto(`${registered.launchUrl}?${new URLSearchParams({ iss, launch })}`);
    await page.getByLabel('User name').fill('larts');
    await page.getByLabel('Password').fill('correct horse battery staple');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForSelector('body[data-loaded="true"]');
    assert.equal(new URL(page.url()).pathname, '/viewer/');
    assert.match((await page.textContent('#banner')) ?? '', /T\.E\.S\.T\. Zorgviewer.*000004881/s);
    assert.match((await page.textContent('#who')) ?? '', /L\. Arts · 2\.16\.528\.1\.1007\.3\.3\.15123/);
    const launched = (await hubEvents('110122')).filter((e) => /smart:/.test(e.outcomeDesc ?? '')).at(-1);
    assert.equal(
      launched?.agent?.find((a) => a.requestor)?.who?.identifier?.value,
      '177578',
      'the AGB of the practitioner',
    );
    await context.close();

    // Login CSRF: someone completes a launch of their own at the EHR and hands the callback URL to a clinician.
    const second = await ehrLaunch();
    const started = await fetch(`${registered.launchUrl}?${new URLSearchParams(second)}`, {
      dispatcher: agent,
      redirect: 'manual',
    });
    assert.equal(started.status, 303);
    assert.match(started.headers.get('set-cookie') ?? '', /^cv_launch=[\w-]+; Path=\/viewer\/launch; HttpOnly; Secure/);
    const callback = await new LoginDriver(ehr.base, ehr.agent()).authorize(started.headers.get('location') as string, {
      username: 'larts',
      password: 'correct horse battery staple',
    });
    assert.ok(callback instanceof URL && callback.searchParams.get('code'), 'the EHR redirected back with a code');
    const victim = await browser.newContext();
    const victimPage = await victim.newPage();
    await victimPage.goto(callback.href);
    await victimPage.waitForSelector('#reason');
    assert.match((await victimPage.textContent('#reason')) ?? '', /started in another browser/);
    assert.equal(
      (await victim.cookies()).filter((c) => c.name === 'cv_viewer' && c.value !== '').length,
      0,
      'no viewer session',
    );
    await victim.close();
  });

  test('an EHR launch from an unregistered EHR is refused', async () => {
    const res = await fetch(
      `${net.hub.base}/viewer/launch?iss=${encodeURIComponent('https://ehr.elsewhere.test/fhir')}&launch=abc`,
      {
        dispatcher: agent,
        redirect: 'manual',
      },
    );
    assert.equal(res.status, 403);
    assert.match(await res.text(), /not registered at this EHR/);
  });

  test('a refused launch shows which check failed', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await launch(page, vip({ notBefore: -900, notOnOrAfter: -600 }));
    await page.waitForSelector('#reason');
    assert.match((await page.textContent('#reason')) ?? '', /expired/);
    assert.match((await page.textContent('h1')) ?? '', /kon niet worden geopend/);
    await context.close();
  });
});

describe('session lifetime', () => {
  test('a session ends after its idle time and after its maximum age', async () => {
    const sessions = new ViewerSessions(net.hub.store, 3600, 60);
    const professional = { id: ARTS.id, role: ARTS.role, organizationOid: ARTS.org };
    const s = await sessions.create({ professional, patient: { bsn: BSN }, via: 'test' });
    assert.ok(await sessions.get(s.id));
    const idle = { ...s, lastSeen: Date.now() - 61_000 };
    await net.hub.store.oidc.upsert('ViewerSession', s.id, idle as unknown as Record<string, unknown>, null, {});
    assert.equal(await sessions.get(s.id), undefined, 'idle too long');
    const old = await sessions.create({ professional, patient: { bsn: BSN }, via: 'test' });
    const aged = { ...old, createdAt: Date.now() - 3601_000, lastSeen: Date.now() };
    await net.hub.store.oidc.upsert('ViewerSession', old.id, aged as unknown as Record<string, unknown>, null, {});
    assert.equal(await sessions.get(old.id), undefined, 'older than the maximum age');
  });

  test('every page view is audited with the professional and the patient', async () => {
    const res = await post(vip());
    const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0] as string;
    const before = (await hubEvents('110110')).filter((e) => e.subtype?.[0]?.code === 'page-view').length;
    const page = await fetch(`${net.hub.base}/viewer/`, { dispatcher: agent, headers: { cookie } });
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self';/);
    assert.doesNotMatch(page.headers.get('content-security-policy') ?? '', /unsafe-inline/);
    const views = (await hubEvents('110110')).filter((e) => e.subtype?.[0]?.code === 'page-view');
    assert.equal(views.length, before + 1);
    const last = views.at(-1) as AuditEvent;
    assert.equal(last.agent?.find((a) => a.requestor)?.who?.identifier?.value, ARTS.id);
    assert.equal(last.entity?.[0]?.what?.identifier?.value, BSN_TWICE);
  });
});

describe('SAML 2.0 bearer grant (RFC 7522) with the same IdP and mapping', () => {
  let secret: string;
  const tokenUrl = () => `${net.hub.base}/oauth/token`;
  const exchange = (assertion: string, clientId = 'saml-app', clientSecret = secret) =>
    fetch(tokenUrl(), {
      method: 'POST',
      dispatcher: agent,
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString('base64')}`,
      },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:saml2-bearer',
        assertion,
        scope: 'system/Patient.rs',
      }).toString(),
    });
  const bearer = (o: Partial<Parameters<typeof samlAssertion>[1]> = {}) =>
    samlAssertion(viplive, {
      acsUrl: tokenUrl(),
      audience: tokenUrl(),
      nameId: ARTS.id,
      attributes: vipAttributes(),
      ...o,
    });

  before(async () => {
    ({ client_secret: secret } = await ok<{ client_secret: string }>(
      net.hub.dataDir,
      ...[
        'client',
        'add',
        'saml-app',
        '--auth',
        'client_secret_basic',
        '--saml-bearer',
        '--scope',
        'system/Patient.rs',
      ],
    ));
  });

  test('a signed assertion becomes a token whose IUA claims name the professional', async () => {
    const res = await exchange(bearer());
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { access_token: string; token_type: string; scope: string };
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.scope, 'system/Patient.rs');
    const claims = JSON.parse(Buffer.from(body.access_token.split('.')[1] as string, 'base64url').toString());
    assert.equal(claims.client_id, 'saml-app');
    assert.deepEqual(claims.extensions.ihe_iua, {
      subject_id: ARTS.id,
      subject_name: 'L. Arts',
      subject_role: [{ system: 'http://snomed.info/sct', code: ARTS.role }],
      subject_organization_id: `urn:oid:${VIPLIVE_ORG}`,
    });
    // The professional's organization is the IdP's word about the user, not the client's: grants to that
    // organization stay closed to this token (the client has none of its own).
    assert.equal(claims['carevault:organization'], '');
    await ok(net.hub.dataDir, 'partition', 'add', 'viplive-org');
    await ok(
      net.hub.dataDir,
      ...['grant', 'add', '--partition', 'viplive-org', '--org-oid', VIPLIVE_ORG, '--scope', 'system/Patient.rs'],
    );
    const search = await fetch(`${net.hub.base}/fhir/viplive-org/Patient`, {
      dispatcher: agent,
      headers: { authorization: `Bearer ${body.access_token}`, accept: 'application/fhir+json' },
    });
    assert.equal(search.status, 404);
  });

  test('refused: replay, the ACS audience, an unsigned assertion, a client not registered for the grant', async () => {
    const once = bearer();
    assert.equal((await exchange(once)).status, 200);
    for (const [name, assertion, description] of [
      ['replayed', once, /already used/],
      ['audience is the viewer, not the token endpoint', bearer({ audience: acs.entityId }), /Audience/],
      ['unsigned', bearer({ sign: 'none' }), /signature/],
      ['another IdP key', bearer({ signer: stranger }), /signature/],
    ] as const) {
      const res = await exchange(assertion);
      assert.equal(res.status, 400, name);
      const err = (await res.json()) as { error: string; error_description: string };
      assert.equal(err.error, 'invalid_grant', name);
      assert.match(err.error_description, description, name);
    }
    const { client_secret: other } = await ok<{ client_secret: string }>(
      net.hub.dataDir,
      ...['client', 'add', 'plain-app', '--auth', 'client_secret_basic', '--scope', 'system/Patient.rs'],
    );
    const res = await exchange(bearer(), 'plain-app', other);
    assert.equal(((await res.json()) as { error: string }).error, 'unauthorized_client');
  });
});
