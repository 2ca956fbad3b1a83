import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { signUserContext, TokenManager, userContextClaims } from '@carevault/sdk';
import { tlsFetch } from '@carevault/sdk/node';
import type { AuditEvent } from 'fhir/r4.js';
import { exportJWK, generateKeyPair, importPKCS8, SignJWT } from 'jose';
import type { TestPlatform } from './helpers/platform.ts';
import {
  ARTS,
  BSN,
  BSN_NOWHERE,
  BSN_TWICE,
  cli,
  cliWithEnv,
  FIXTURES,
  ok,
  startZorgviewerNetwork,
  TJONGERSCHANS,
  UMCG,
  type ViewerInit,
  type ZorgviewerNetwork,
} from './helpers/zorgviewer.ts';

// Seed 001 end to end: a viewer hub and two source systems, three real HTTPS servers, set up with the contract
// commands; the sources check the viewer's user context and log the professional behind every request.
const PDF = readFileSync(join(FIXTURES, 'ontslagbrief.pdf'));

interface Result {
  correlationId: string;
  patient?: { bsn: string; name?: string; birthDate?: string };
  sources: {
    name: string;
    organization: string;
    status: string;
    http?: number;
    error?: string;
    warning?: string;
    count: number;
    truncated?: boolean;
  }[];
  resources: { resourceType: string; id: string; meta?: { source?: string } }[];
  warnings: string[];
}

let net: ZorgviewerNetwork;
let hub: TestPlatform;
let srcA: TestPlatform;
let srcB: TestPlatform;
let init: ViewerInit;
let tmp: string;
const consent = (bsn: string, orgOid: string, ...flags: string[]) => net.consent(bsn, orgOid, ...flags);
const addSource = (p: TestPlatform, name: string, oid: string, style: string) => net.addSource(p, name, oid, style);
const eventsOf = (p: TestPlatform, correlationId: string) => net.eventsOf(p, correlationId);

const query = (bsn: string, user = ARTS, extra: string[] = []) =>
  ok<Result>(
    hub.dataDir,
    ...['viewer', 'query', '--bsn', bsn, '--user-id', user.id, '--user-role', user.role],
    ...['--user-org', user.org, '--user-name', user.name, ...extra],
  );

/** A new client key pair, its public half written as a JWKS file for `client add --jwks`. */
async function newKey(name: string, kid: string) {
  const key = await generateKeyPair('ES256', { extractable: true });
  const jwksFile = join(tmp, `${name}.json`);
  writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(key.publicKey)), kid }] }));
  return { key, jwksFile };
}

before(async () => {
  net = await startZorgviewerNetwork();
  ({ hub, srcA, srcB, init, tmp } = net);
});

after(async () => {
  await net?.stop();
});

const requestEntity = (e: AuditEvent) => e.entity?.find((x) => x.type?.code === 'XrequestId');
const detail = (e: AuditEvent, type: string) => requestEntity(e)?.detail?.find((d) => d.type === type)?.valueString;

describe('viewer init and the directory', () => {
  test('init prints the contract fields, keeps the key owner-only and publishes the JWKS', async () => {
    assert.equal(init.clientId, 'zorgviewer');
    assert.equal(init.jwksUri, `${hub.base}/viewer/jwks`);
    assert.equal(init.directory, `${hub.base}/fhir/zorgviewer-directory`);
    assert.equal(init.consent, `${hub.base}/fhir/zorgviewer-consent`);
    const file = JSON.parse(readFileSync(init.jwksFile, 'utf8')) as { keys: Record<string, unknown>[] };
    assert.equal(file.keys.length, 1);
    assert.equal(file.keys[0]?.d, undefined, 'the JWKS holds the public key only');
    const res = await hub.fetch(init.jwksUri, { dispatcher: hub.agent() });
    assert.deepEqual(await res.json(), file);
    assert.equal(statSync(join(hub.dataDir, 'viewer', 'signing-key.pem')).mode & 0o777, 0o600);
    // Running it again changes nothing.
    assert.deepEqual(await ok(hub.dataDir, 'viewer', 'init'), init);
  });

  test('source list shows both sources; adding one again updates it instead of duplicating', async () => {
    const again = await addSource(srcA, 'Tjongerschans', TJONGERSCHANS, 'generic');
    const list = await ok<{ name: string; organizationOid: string; endpoint: string; style: string }[]>(
      hub.dataDir,
      'viewer',
      'source',
      'list',
    );
    assert.deepEqual(list.map((s) => [s.name, s.organizationOid, s.style]).sort(), [
      ['Tjongerschans', TJONGERSCHANS, 'generic'],
      ['UMCG', UMCG, 'epic'],
    ]);
    assert.ok(list.some((s) => s.endpoint === again.endpoint));
  });

  test('bad input is refused in one line', async () => {
    for (const [args, message] of [
      [['consent', 'add', '--bsn', '123456789', '--org-oid', UMCG], /not a valid BSN/],
      [['consent', 'add', '--bsn', BSN, '--org-oid', 'umcg'], /OID/],
      [['consent', 'add', '--bsn', BSN, '--org-oid', UMCG, '--start', '2026-13-01'], /YYYY-MM-DD/],
      [['source', 'add', '--name', 'X', '--org-oid', UMCG, '--fhir-base', 'nope', '--client-id', 'x'], /absolute URL/],
      [['query', '--bsn', '123456789', '--user-id', 'a', '--user-role', '1', '--user-org', UMCG], /ongeldig/],
      // Taken as the default, or as a budget already spent, before these were checked.
      [
        ['query', '--bsn', BSN, '--user-id', 'a', '--user-role', '1', '--user-org', UMCG, '--timeout', 'abc'],
        /--timeout/,
      ],
      [
        ['query', '--bsn', BSN, '--user-id', 'a', '--user-role', '1', '--user-org', UMCG, '--timeout', '-5'],
        /--timeout/,
      ],
      // A CA that is no certificate, and a key file the viewer would never sign with, were stored as given.
      [['app', 'add', '--ehr', 'https://ehr.test/fhir', '--client-id', 'x', '--ca', FIXTURES], /a directory was given/],
      [
        ['app', 'add', '--ehr', 'https://ehr.test/fhir', '--client-id', 'x', '--ca', join(FIXTURES, 'source-a.json')],
        /not a PEM/,
      ],
      [['app', 'add', '--ehr', 'https://ehr.test/fhir', '--client-id', 'x', '--jwks', 'keys.json'], /takes no file/],
    ] as const) {
      const r = await cli(hub.dataDir, 'viewer', ...args);
      assert.equal(r.code, 1, args.join(' '));
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
});

describe('viewer query (seq-2, seq-3)', () => {
  let first: Result;

  test('consent for one source only: its data, and no-consent for the other', async () => {
    await consent(BSN, TJONGERSCHANS, '--start', '2026-01-01');
    await consent(BSN, UMCG, '--status', 'rejected');
    first = await query(BSN);
    const byName = Object.fromEntries(first.sources.map((s) => [s.name, s]));
    assert.equal(byName.Tjongerschans?.status, 'ok');
    assert.equal(byName.UMCG?.status, 'no-consent');
    assert.equal(first.patient?.name, 'T.E.S.T. Zorgviewer');
    assert.equal(first.patient?.birthDate, '1973-02-01');
    const ids = first.resources.map((r) => `${r.resourceType}/${r.id}`).sort();
    assert.deepEqual(ids, [
      'AllergyIntolerance/a-pen',
      'Condition/a-dm',
      'DocumentReference/a-doc',
      'Observation/a-cl',
      'Observation/a-mg',
      'Observation/a-na',
      'Observation/a-weight',
      'Patient/test-zv',
    ]);
    assert.ok(first.resources.every((r) => r.meta?.source === `urn:oid:${TJONGERSCHANS}`));
    assert.equal(byName.Tjongerschans?.count, ids.length);
  });

  test('the source logged the professional, the organization and the viewer correlation id (NEN 7513)', async () => {
    const events = await eventsOf(srcA, first.correlationId);
    const reads = events.filter((e) => e.type?.code === 'rest');
    assert.ok(reads.length >= 8, `patient lookup and every BgZ query are logged (${reads.length})`);
    for (const e of reads) {
      const user = e.agent?.find((a) => a.requestor && a.who?.identifier?.value === ARTS.id);
      assert.ok(user, 'the professional is the requesting agent');
      assert.equal(user.who?.display, 'L. Arts');
      assert.equal(user.role?.[0]?.coding?.[0]?.code, ARTS.role);
      const org = e.agent?.find((a) => a.type?.coding?.[0]?.code === 'UserOrganization');
      assert.equal(org?.who?.identifier?.value, `urn:oid:${TJONGERSCHANS}`);
      assert.equal(detail(e, 'X-Correlation-Id'), first.correlationId);
      assert.equal(detail(e, 'X-ZV-Context'), 'verified');
      assert.equal(e.agent?.find((a) => a.who?.identifier?.value === 'rivo-zorgviewer')?.requestor, false);
    }
    // And the token it was issued names the same professional.
    const { events: tokens } = await srcA.store.audit.search({ agent: ['rivo-zorgviewer'], limit: 100, offset: 0 });
    assert.ok(tokens.length > 0);
    // The viewer wrote one event per source it queried, naming the professional, the BSN and the request ids.
    const own = (await eventsOf(hub, first.correlationId)).filter((e) => e.type?.code === '110110');
    assert.equal(own.length, 1, 'the source without consent is not queried');
    const [v] = own as [AuditEvent];
    assert.equal(v.agent?.find((a) => a.requestor)?.who?.identifier?.value, ARTS.id);
    assert.equal(v.entity?.find((x) => x.role?.code === '1')?.what?.identifier?.value, BSN);
    const sent = v.entity
      ?.flatMap((x) => x.detail ?? [])
      .filter((d) => d.type === 'X-Request-Id')
      .map((d) => d.valueString);
    const logged = new Set(reads.map((e) => requestEntity(e)?.what?.identifier?.value));
    assert.ok(sent?.length && sent.every((id) => logged.has(id)), 'every request id is in the source log');
  });

  test('consent for both: both answer, every resource tagged with its source; the Epic-style source got AORTA-ID', async () => {
    await consent(BSN, UMCG);
    const r = await query(BSN);
    assert.deepEqual(r.sources.map((s) => [s.name, s.status]).sort(), [
      ['Tjongerschans', 'ok'],
      ['UMCG', 'ok'],
    ]);
    const tags = new Map<string, string[]>();
    for (const res of r.resources)
      tags.set(res.meta?.source ?? '?', [...(tags.get(res.meta?.source ?? '?') ?? []), res.id]);
    assert.deepEqual([...tags.keys()].sort(), [`urn:oid:${UMCG}`, `urn:oid:${TJONGERSCHANS}`].sort());
    assert.ok(tags.get(`urn:oid:${UMCG}`)?.includes('b-k'));
    assert.ok(!r.resources.some((x) => x.id.startsWith('fictief') || x.id.startsWith('other')));
    const epic = (await eventsOf(srcB, r.correlationId)).filter((e) => e.type?.code === 'rest');
    assert.ok(epic.length > 0);
    for (const e of epic) {
      const aorta = detail(e, 'claimed:aorta-id') as string;
      assert.match(
        aorta,
        new RegExp(`^rid:[\\w-]{12};cid:${r.correlationId};usr:177578;rol:62247001;org:${TJONGERSCHANS}$`),
      );
      assert.ok(aorta.length <= 128);
    }
    assert.equal(
      detail(epic[0] as AuditEvent, 'claimed:aorta-id')?.split(';')[0],
      `rid:${requestEntity(epic[0] as AuditEvent)?.what?.identifier?.value}`,
    );
  });

  test("the seed's BSN cases: two patients with one BSN are never merged; a BSN no source knows", async () => {
    await consent(BSN_TWICE, TJONGERSCHANS);
    await consent(BSN_TWICE, UMCG);
    const r = await query(BSN_TWICE);
    const byName = Object.fromEntries(r.sources.map((s) => [s.name, s]));
    assert.equal(byName.Tjongerschans?.status, 'ok');
    assert.equal(byName.UMCG?.status, 'multiple-patients');
    assert.equal(byName.UMCG?.warning, "Bron 'UMCG' bevat meerdere patiënten met dit BSN nummer.");
    assert.deepEqual(r.warnings, [byName.UMCG?.warning]);
    assert.deepEqual(r.resources.map((x) => x.id).sort(), ['f-cl', 'f-na', 'fictief'], 'only the unambiguous source');
    assert.ok(r.resources.every((x) => x.meta?.source === `urn:oid:${TJONGERSCHANS}`));
    assert.equal(r.patient?.name, 'J. Fictief');

    await consent(BSN_NOWHERE, TJONGERSCHANS);
    await consent(BSN_NOWHERE, UMCG);
    const none = await query(BSN_NOWHERE);
    assert.deepEqual(
      none.sources.map((s) => s.status),
      ['no-patient', 'no-patient'],
    );
    assert.deepEqual(none.resources, []);
    assert.equal(none.patient, undefined);
  });

  test('an expired consent no longer counts', async () => {
    await consent(BSN, UMCG, '--start', '2020-01-01', '--end', '2021-01-01');
    const r = await query(BSN);
    assert.equal(r.sources.find((s) => s.name === 'UMCG')?.status, 'no-consent');
    await consent(BSN, UMCG);
  });

  test('a source with more than the viewer takes is cut off: what arrived is shown, with a warning', async () => {
    // A patient only Tjongerschans knows: three small Conditions, and a Condition and a document of ≈ 600 KB:
    // each answer stays under 1 MiB, both together do not.
    const bsn = '700000008';
    const subject = { reference: 'Patient/big' };
    const entry = (resource: { resourceType: string; id: string }) => ({
      resource,
      request: { method: 'PUT', url: `${resource.resourceType}/${resource.id}` },
    });
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        entry({
          resourceType: 'Patient',
          id: 'big',
          identifier: [{ system: 'http://fhir.nl/fhir/NamingSystem/bsn', value: bsn }],
        } as never),
        ...[1, 2, 3].map((n) =>
          entry({ resourceType: 'Condition', id: `big-c${n}`, code: { text: `diagnose ${n}` }, subject } as never),
        ),
        entry({
          resourceType: 'Condition',
          id: 'big-c4',
          code: { text: 'diagnose 4' },
          subject,
          note: [{ text: 'x'.repeat(600_000) }],
        } as never),
        entry({
          resourceType: 'DocumentReference',
          id: 'big-d1',
          status: 'current',
          subject,
          content: [{ attachment: { contentType: 'text/plain', data: Buffer.alloc(450_000, 1).toString('base64') } }],
        } as never),
      ],
    };
    const file = join(tmp, 'big-record.json');
    writeFileSync(file, JSON.stringify(bundle));
    await ok(srcA.dataDir, 'import', file, '--partition', 'ehr');
    await consent(bsn, TJONGERSCHANS);
    await consent(bsn, UMCG, '--status', 'rejected');
    const all = [
      'Condition/big-c1',
      'Condition/big-c2',
      'Condition/big-c3',
      'Condition/big-c4',
      'DocumentReference/big-d1',
      'Patient/big',
    ];
    const ids = (r: Result) => r.resources.map((x) => `${x.resourceType}/${x.id}`).sort();
    const tj = (r: Result) => r.sources.find((s) => s.name === 'Tjongerschans');
    const warning =
      "Bron 'Tjongerschans' heeft meer gegevens dan de viewer van één bron toont; niet alles wordt getoond.";

    // Within the limits (the defaults, or a budget above the ≈ 1.2 MB of the record): all of it, no warning.
    for (const extra of [[], ['--max-source-kb', '4096'], ['--max-resources', '6']]) {
      const r = await query(bsn, ARTS, extra);
      assert.deepEqual(ids(r), all, JSON.stringify(r.sources));
      assert.equal(tj(r)?.truncated, undefined);
      assert.deepEqual(r.warnings, []);
    }

    // At most 4 resources: the Patient and three more, and the source says it was cut off.
    const few = await query(bsn, ARTS, ['--max-resources', '4']);
    assert.equal(tj(few)?.status, 'ok');
    assert.equal(tj(few)?.truncated, true);
    assert.equal(tj(few)?.count, 4);
    assert.equal(few.resources.length, 4);
    assert.ok(ids(few).includes('Patient/big'));
    assert.ok(ids(few).every((id) => all.includes(id)));
    assert.equal(tj(few)?.warning, warning);
    assert.deepEqual(few.warnings, [warning]);
    assert.equal(few.patient?.bsn, bsn);
    // The viewer's own record of the query says so too.
    const [event] = (await eventsOf(hub, few.correlationId)).filter((e) => e.type?.code === '110110');
    const details = Object.fromEntries(
      (event?.entity?.flatMap((x) => x.detail ?? []) ?? []).map((d) => [d.type, d.valueString]),
    );
    assert.equal(details.count, '4');
    assert.equal(details.truncated, 'true');

    // 1 MiB for all of the source's answers: the second large answer passes it and is dropped, and the searches
    // still running are stopped; the Patient and whatever answers came first are kept.
    const small = await query(bsn, ARTS, ['--max-source-kb', '1024']);
    assert.equal(tj(small)?.status, 'ok');
    assert.equal(tj(small)?.truncated, true);
    assert.equal(tj(small)?.warning, warning);
    assert.ok(ids(small).includes('Patient/big'));
    assert.ok(!(ids(small).includes('Condition/big-c4') && ids(small).includes('DocumentReference/big-d1')));
    assert.ok(ids(small).every((id) => all.includes(id)));
    assert.equal(tj(small)?.count, small.resources.length);

    // The platform's setting is the default of the web viewer and of `viewer query`; the command's flag wins.
    const args = [
      'viewer',
      'query',
      '--bsn',
      bsn,
      '--user-id',
      ARTS.id,
      '--user-role',
      ARTS.role,
      '--user-org',
      ARTS.org,
    ];
    const four = { CAREVAULT_VIEWER_MAX_RESOURCES: '4' };
    const set = await cliWithEnv(four, hub.dataDir, ...args);
    assert.equal(set.code, 0, set.stderr);
    assert.deepEqual([tj(JSON.parse(set.stdout))?.truncated, tj(JSON.parse(set.stdout))?.count], [true, 4]);
    const flagWins = await cliWithEnv(four, hub.dataDir, ...args, '--max-resources', '6');
    assert.deepEqual(ids(JSON.parse(flagWins.stdout)), all, flagWins.stderr);
    const junk = await cliWithEnv({ CAREVAULT_VIEWER_MAX_SOURCE_KB: 'lots' }, hub.dataDir, ...args);
    assert.notEqual(junk.code, 0);
    assert.match(junk.stderr, /CAREVAULT_VIEWER_MAX_SOURCE_KB must be an integer between 1 and 4194304, got "lots"/);
    assert.equal(junk.stderr.trim().split('\n').length, 1, junk.stderr);

    for (const [flag, value] of [
      ['--max-resources', '0'],
      ['--max-resources', 'all'],
      ['--max-source-kb', '-5'],
    ] as const) {
      const r = await cli(hub.dataDir, ...args, flag, value);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(`${flag} must be a whole number between 1 and`));
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
});

describe('BgZ queries from the directory', () => {
  test('a PlanDefinition BgZ2017 in the directory decides what is asked; a retired one is ignored', async () => {
    const plan = (status: string) => ({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          request: { method: 'PUT', url: 'PlanDefinition/bgz2017' },
          resource: {
            resourceType: 'PlanDefinition',
            id: 'bgz2017',
            name: 'BgZ2017',
            status,
            action: [
              {
                output: [
                  { type: 'Patient' },
                  { type: 'Condition' },
                  {
                    type: 'Observation',
                    codeFilter: [
                      {
                        path: 'category',
                        code: [
                          { system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' },
                        ],
                      },
                    ],
                  },
                ],
              },
            ],
          },
        },
      ],
    });
    const file = join(tmp, 'plan.json');
    writeFileSync(file, JSON.stringify(plan('active')));
    await ok(hub.dataDir, 'import', file, '--partition', 'zorgviewer-directory');
    const r = await query(BSN);
    const fromA = r.resources
      .filter((x) => x.meta?.source === `urn:oid:${TJONGERSCHANS}`)
      .map((x) => x.id)
      .sort();
    assert.deepEqual(fromA, ['a-cl', 'a-dm', 'a-mg', 'a-na', 'test-zv']);
    writeFileSync(file, JSON.stringify(plan('retired')));
    await ok(hub.dataDir, 'import', file, '--partition', 'zorgviewer-directory');
    const all = await query(BSN);
    assert.ok(
      all.resources.some((x) => x.id === 'a-weight' || x.id === 'a-pen'),
      'the built-in BgZ set again',
    );
  });
});

describe('documents (seq-4) and Binary in its own format', () => {
  /** `viewer document` for the professional, fetching `url` from Tjongerschans. */
  const documentArgs = (url: string, out: string) => [
    'viewer',
    'document',
    ...['--bsn', BSN, '--source', TJONGERSCHANS, '--url', url, '--out', out],
    ...['--user-id', ARTS.id, '--user-role', ARTS.role, '--user-org', ARTS.org],
  ];

  test('a PDF Binary round-trips byte-identical through the aggregator', async () => {
    const out = join(tmp, 'brief.pdf');
    const r = await ok<{ contentType: string; sha256: string }>(hub.dataDir, ...documentArgs('Binary/a-letter', out));
    assert.equal(r.contentType, 'application/pdf');
    assert.ok(readFileSync(out).equals(PDF), 'same bytes as the source stored');
    assert.equal(r.sha256, createHash('sha256').update(PDF).digest('hex'));
  });

  test('a document URL outside the source, or from a source without consent, is refused', async () => {
    const out = join(tmp, 'x');
    const elsewhere = await cli(hub.dataDir, ...documentArgs(`${srcB.base}/fhir/ehr/Binary/a-letter`, out));
    assert.equal(elsewhere.code, 1);
    assert.match(elsewhere.stderr, /not under the source's FHIR base/);
    await consent(BSN, TJONGERSCHANS, '--status', 'rejected');
    const refused = await cli(hub.dataDir, ...documentArgs('Binary/a-letter', out));
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /no active consent/);
    await consent(BSN, TJONGERSCHANS);
    // A media type with a line break failed as a header inside fetch, which the client took for a network error
    // and retried; it is refused before any request now.
    for (const accept of ['application/pdf\r\nX-Evil: 1', 'pdf']) {
      const r = await cli(hub.dataDir, ...documentArgs('Binary/a-letter', out), '--accept', accept);
      assert.equal(r.code, 1, accept);
      assert.match(r.stderr, /is not a media type to ask a source for/);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
});

describe('the source side: user context in assertions and X-ZV-Context', () => {
  const base = () => `${srcA.base}/fhir/ehr`;
  let viewerKey: CryptoKey;
  let kid: string;
  let fetchA: ReturnType<typeof tlsFetch>;

  before(async () => {
    viewerKey = (await importPKCS8(
      readFileSync(join(hub.dataDir, 'viewer', 'signing-key.pem'), 'utf8'),
      'ES256',
    )) as CryptoKey;
    kid = (JSON.parse(readFileSync(init.jwksFile, 'utf8')) as { keys: { kid: string }[] }).keys[0]?.kid as string;
    fetchA = tlsFetch({ ca: srcA.ca });
  });
  after(async () => fetchA?.close());

  const professional = { id: ARTS.id, role: ARTS.role, organizationOid: ARTS.org, name: ARTS.name };
  const tokenFor = (clientId: string, claims: Record<string, unknown>, key = viewerKey) =>
    new TokenManager({
      issuer: srcA.base,
      clientId,
      fetch: fetchA,
      maxRetries: 0,
      auth: { method: 'private_key_jwt', privateKey: key, kid, claims },
    }).getToken();

  const getPatient = (token: string, headers: Record<string, string>) =>
    fetchA(`${base()}/Patient/test-zv`, {
      headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+json', ...headers },
    });

  test('the token carries the asserted user context in extensions.ihe_iua', async () => {
    const token = await tokenFor('rivo-zorgviewer', userContextClaims(professional));
    const payload = JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString());
    assert.deepEqual(payload.extensions.ihe_iua, {
      subject_organization_id: `urn:oid:${TJONGERSCHANS}`,
      subject_role: [{ system: 'http://snomed.info/sct', code: ARTS.role }],
      subject_name: 'L. Arts',
      subject_id: ARTS.id,
    });
  });

  test('a client not registered for it cannot assert a user context, nor a non-aggregator another organization', async () => {
    const { key, jwksFile } = await newKey('plain', kid);
    await ok(
      srcA.dataDir,
      'client',
      'add',
      'plain-app',
      '--auth',
      'private_key_jwt',
      '--jwks',
      jwksFile,
      '--scope',
      'system/*.rs',
    );
    await ok(
      srcA.dataDir,
      'client',
      'add',
      'own-app',
      '--auth',
      'private_key_jwt',
      '--jwks',
      jwksFile,
      '--scope',
      'system/*.rs',
      '--assert-user-context',
      '--org-oid',
      UMCG,
    );
    await assert.rejects(tokenFor('plain-app', { subject_name: 'X' }, key.privateKey), /invalid_client/);
    await assert.rejects(tokenFor('own-app', userContextClaims(professional), key.privateKey), /invalid_client/);
    const own = await tokenFor(
      'own-app',
      userContextClaims({ ...professional, organizationOid: UMCG }),
      key.privateKey,
    );
    assert.ok(own);
    const refused = (await srcA.store.audit.search({ agent: ['plain-app'], limit: 10, offset: 0 })).events.map(
      (e) => JSON.parse(e) as AuditEvent,
    );
    assert.ok(
      refused.some((e) => e.outcome !== '0'),
      'the refusal is audited',
    );
  });

  test("an aggregator acting for another organization's professional does not get that organization's grants", async () => {
    // A vault granted to Tjongerschans's own systems: every client registered for that organization.
    await ok(srcA.dataDir, 'partition', 'add', 'tjs-only');
    await ok(
      srcA.dataDir,
      'grant',
      'add',
      '--partition',
      'tjs-only',
      '--org-oid',
      TJONGERSCHANS,
      '--scope',
      'system/*.rs',
    );
    const { key, jwksFile } = await newKey('tjs', kid);
    await ok(
      srcA.dataDir,
      ...['client', 'add', 'tjs-ehr', '--auth', 'private_key_jwt', '--jwks', jwksFile, '--scope', 'system/*.rs'],
      ...['--org-oid', TJONGERSCHANS],
    );
    const search = (token: string) =>
      fetchA(`${srcA.base}/fhir/tjs-only/Patient`, {
        headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+json' },
      });
    assert.equal(
      (await search(await tokenFor('tjs-ehr', {}, key.privateKey))).status,
      200,
      "the organization's client",
    );
    // The viewer names a Tjongerschans professional: the token says so (for the audit), but the viewer is no client
    // of Tjongerschans, and naming an organization must not open what is granted to it.
    const viewer = await tokenFor('rivo-zorgviewer', userContextClaims(professional));
    const payload = JSON.parse(Buffer.from(viewer.split('.')[1] as string, 'base64url').toString());
    assert.equal(payload.extensions.ihe_iua.subject_organization_id, `urn:oid:${TJONGERSCHANS}`);
    assert.equal((await search(viewer)).status, 404);
  });

  test('a forged or mismatching X-ZV-Context is refused with 400 and a Security Alert; the right one is accepted', async () => {
    const token = await tokenFor('rivo-zorgviewer', userContextClaims(professional));
    const signer = { key: viewerKey, kid, clientId: 'rivo-zorgviewer' };
    const good = await signUserContext(professional, signer);
    const headers = {
      'x-zv-subject-organization-id': ARTS.org,
      'x-zv-subject-id': ARTS.id,
      'x-zv-subject-role': ARTS.role,
    };
    const accepted = await getPatient(token, { ...headers, 'x-zv-context': good, 'x-correlation-id': 'zvForgeTest1' });
    assert.equal(accepted.status, 200);

    const stranger = await generateKeyPair('ES256');
    const hs = await new SignJWT({ subject_organization_id: ARTS.org, subject_id: ARTS.id, subject_role: ARTS.role })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode('shared-secret-of-the-seed-example'));
    const cases: [string, Record<string, string>, RegExp][] = [
      ['HS256 as in the seed', { ...headers, 'x-zv-context': hs }, /alg HS256 is not allowed/],
      [
        'another key',
        { ...headers, 'x-zv-context': await signUserContext(professional, { ...signer, key: stranger.privateKey }) },
        /signature/,
      ],
      [
        'header differs',
        { ...headers, 'x-zv-subject-id': 'someone-else', 'x-zv-context': good },
        /x-zv-subject-id does not match/,
      ],
      [
        'token differs',
        { 'x-zv-context': await signUserContext({ ...professional, id: 'other-doc' }, signer) },
        /subject_id differs from the token/,
      ],
      ['not a JWS', { 'x-zv-context': 'garbage' }, /not a JWS/],
    ];
    for (const [name, h, message] of cases) {
      const res = await getPatient(token, { ...h, 'x-correlation-id': 'zvForgeTest2' });
      assert.equal(res.status, 400, name);
      const body = (await res.json()) as { resourceType: string; issue: { code: string; diagnostics: string }[] };
      assert.equal(body.resourceType, 'OperationOutcome');
      assert.equal(body.issue[0]?.code, 'security');
      assert.match(body.issue[0]?.diagnostics ?? '', message, name);
    }
    const alerts = (await eventsOf(srcA, 'zvForgeTest2')).filter((e) => e.type?.code === '110113');
    assert.equal(alerts.length, cases.length, 'one Security Alert per refused context');
    const read = (await eventsOf(srcA, 'zvForgeTest1')).find((e) => e.type?.code === 'rest') as AuditEvent;
    assert.equal(read.agent?.find((a) => a.requestor)?.who?.identifier?.value, ARTS.id);
  });

  test('unsigned X-ZV-* headers are recorded as claimed, never as the user', async () => {
    const plain = await tokenFor('rivo-zorgviewer', {});
    const res = await getPatient(plain, {
      'x-zv-subject-id': 'mallory',
      'x-zv-subject-role': '62247001',
      'x-correlation-id': 'zvClaimedTst',
    });
    assert.equal(res.status, 200);
    const [e] = (await eventsOf(srcA, 'zvClaimedTst')).filter((x) => x.type?.code === 'rest') as [AuditEvent];
    assert.equal(detail(e, 'claimed:x-zv-subject-id'), 'mallory');
    assert.ok(!e.agent?.some((a) => a.who?.identifier?.value === 'mallory'));
    assert.equal(detail(e, 'X-ZV-Context'), undefined);
  });

  test('GET Binary with a non-FHIR Accept returns the raw content with its contentType', async () => {
    const token = await tokenFor('rivo-zorgviewer', {});
    const get = (accept: string) =>
      fetchA(`${base()}/Binary/a-letter`, { headers: { authorization: `Bearer ${token}`, accept } });
    const pdf = await get('application/pdf');
    assert.equal(pdf.status, 200);
    assert.equal(pdf.headers.get('content-type'), 'application/pdf');
    assert.ok(Buffer.from(await pdf.arrayBuffer()).equals(PDF));
    const json = await get('application/fhir+json');
    assert.equal(((await json.json()) as { resourceType: string }).resourceType, 'Binary');
    assert.equal((await get('image/png')).status, 406);
  });
});

describe('the aggregator API and a failing source', () => {
  test('/viewer/api/query takes a token naming the professional; /viewer/api/document returns the PDF', async () => {
    const { key, jwksFile } = await newKey('portal', 'portal-1');
    await ok(
      hub.dataDir,
      'client',
      'add',
      'portal',
      '--auth',
      'private_key_jwt',
      '--jwks',
      jwksFile,
      '--scope',
      'zorgviewer',
      '--assert-user-context',
      '--aggregator',
    );
    const fetchHub = tlsFetch({ ca: hub.ca });
    try {
      const token = await new TokenManager({
        issuer: hub.base,
        clientId: 'portal',
        fetch: fetchHub,
        auth: {
          method: 'private_key_jwt',
          privateKey: key.privateKey,
          kid: 'portal-1',
          claims: userContextClaims({ id: ARTS.id, role: ARTS.role, organizationOid: ARTS.org }),
        },
      }).getToken();
      const res = await fetchHub(`${hub.base}/viewer/api/query`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ bsn: BSN }),
      });
      assert.equal(res.status, 200);
      const r = (await res.json()) as Result;
      assert.deepEqual(
        r.sources.map((s) => s.status),
        ['ok', 'ok'],
      );
      const doc = await fetchHub(
        `${hub.base}/viewer/api/document?bsn=${BSN}&source=${TJONGERSCHANS}&url=Binary/a-letter`,
        {
          headers: { authorization: `Bearer ${token}` },
        },
      );
      assert.equal(doc.status, 200);
      assert.ok(Buffer.from(await doc.arrayBuffer()).equals(PDF));
      // The source's own final answer is passed on (it was a 502 "transient", which invites a retry); a bad Accept
      // is the caller's 400.
      for (const [query, status, code] of [
        ['url=Binary/no-such-letter', 404, 'not-found'],
        ['url=Binary/a-letter&accept=text/csv', 406, 'not-supported'],
        ['url=Binary/a-letter&accept=pdf', 400, 'invalid'],
      ] as const) {
        const r = await fetchHub(`${hub.base}/viewer/api/document?bsn=${BSN}&source=${TJONGERSCHANS}&${query}`, {
          headers: { authorization: `Bearer ${token}` },
        });
        const outcome = (await r.json()) as { issue: { code: string }[] };
        assert.equal(r.status, status, query);
        assert.equal(outcome.issue[0]?.code, code, query);
      }
      const anonymous = await fetchHub(`${hub.base}/viewer/api/query`, {
        method: 'POST',
        body: '{}',
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(anonymous.status, 401);
    } finally {
      await fetchHub.close();
    }
  });

  test('a source stopped mid-test answers error while the other still answers', async () => {
    await srcB.stop();
    const started = Date.now();
    const r = await query(BSN, ARTS, ['--timeout', '5000']);
    const byName = Object.fromEntries(r.sources.map((s) => [s.name, s]));
    assert.equal(byName.Tjongerschans?.status, 'ok');
    assert.ok((byName.Tjongerschans?.count ?? 0) > 0);
    assert.equal(byName.UMCG?.status, 'error');
    assert.ok(byName.UMCG?.error, 'the error says what failed');
    assert.ok(Date.now() - started < 30_000);
    assert.ok(r.resources.every((x) => x.meta?.source === `urn:oid:${TJONGERSCHANS}`));
  });
});
