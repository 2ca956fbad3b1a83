import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TokenManager, userContextClaims } from '@carevault/sdk';
import { tlsFetch } from '@carevault/sdk/node';
import type { Bundle, MeasureReport } from 'fhir/r4.js';
import { exportJWK, generateKeyPair } from 'jose';
import { PERIOD, PROPORTION, patientsOf, RATIO, submission } from './helpers/deqm.ts';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';
import { ok } from './helpers/zorgviewer.ts';

// Issue 12 (seed 002): measures loaded with `carevault import`, patient data submitted through $submit-data,
// then $data-requirements, $evaluate-measure and $care-gaps computed by fqm-execution over the vault.

const ORG_OID = '2.16.840.1.113883.2.4.3.8';
const Q = `periodStart=${PERIOD.start}&periodEnd=${PERIOD.end}`;

let p: TestPlatform;
let clinic: Caller;

type Report = MeasureReport & { group: NonNullable<MeasureReport['group']> };
const populations = (r: Report) =>
  Object.fromEntries(
    (r.group[0]?.population ?? [])
      .filter((x) => x.code?.coding?.[0]?.code !== 'measure-observation')
      .map((x) => [x.code?.coding?.[0]?.code, x.count]),
  );
/** Polls an asynchronous submission's status URL until it is no longer 202. */
async function untilDone(url: string) {
  const path = url.slice(p.fhirBase.length);
  for (let i = 0; i < 200; i++) {
    const r = await fhir(p, clinic, 'GET', path);
    if (r.status !== 202) return r;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`still running: ${url}`);
}
const diagnostics = (r: { json: Record<string, unknown> }) =>
  String((r.json.issue as { diagnostics?: string }[] | undefined)?.[0]?.diagnostics);
/** The observation values of the measure-observation population that refers to `criteria` (a population id). */
const observations = (m: Record<string, unknown>, r: Report, code: string) => {
  const group = (m.group as { population: { id: string; code: { coding: { code: string }[] } }[] }[])[0];
  const target = group?.population.find((x) => x.code.coding[0]?.code === code)?.id;
  return ((r.contained ?? []) as { valueQuantity?: { value: number }; extension?: { valueString: string }[] }[])
    .filter((o) => o.extension?.[0]?.valueString === target)
    .map((o) => o.valueQuantity?.value);
};

before(async () => {
  p = await startPlatform();
  await partition(p, 'quality');
  await partition(p, 'elsewhere');
  clinic = await secretClient(p, 'clinic', 'system/*.cruds', { orgOid: ORG_OID, orgName: 'UMCG' });
  await grant(p, { partition: 'quality', client: 'clinic', scope: 'system/*.cruds' });
  await grant(p, { partition: 'elsewhere', client: 'clinic', scope: 'system/*.cruds' });
  const org = {
    resourceType: 'Organization',
    id: 'umcg',
    name: 'UMCG',
    identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:oid:${ORG_OID}` }],
  };
  assert.equal((await fhir(p, clinic, 'PUT', '/quality/Organization/umcg', org)).status, 201);
  // The contract: measures are loaded like any other Bundle.
  await ok(p.dataDir, 'import', PROPORTION.bundle, RATIO.bundle, '--partition', 'quality');
  for (const pt of patientsOf('proportion-boolean')) {
    const r = await fhir(
      p,
      clinic,
      'POST',
      `/quality/Measure/${PROPORTION.id}/$submit-data`,
      submission(PROPORTION.url, 'Organization/umcg', pt),
    );
    assert.equal(r.status, 200, r.text);
  }
  // The ratio patients go in with Prefer: respond-async: 202, then the status endpoint until done.
  for (const pt of patientsOf('ratio-encounter')) {
    const body = submission(RATIO.url, 'Organization/umcg', pt);
    const r = await fhir(p, clinic, 'POST', `/quality/Measure/${RATIO.id}/$submit-data`, body, {
      prefer: 'respond-async',
    });
    assert.equal(r.status, 202, r.text);
    const done = await untilDone(r.headers.get('content-location') as string);
    assert.equal(done.status, 200, done.text);
    assert.equal(done.json.type, 'transaction-response');
    assert.ok(done.headers.get('x-provenance'));
  }
  // The other vault holds a Patient too: it must never count here, nor be reachable as a subject.
  await fhir(p, clinic, 'PUT', '/elsewhere/Patient/stranger', { resourceType: 'Patient', id: 'stranger' });
});
after(() => p.stop());

describe('$data-requirements (computed from the ELM)', () => {
  test('the CapabilityStatement lists the four Measure operations', async () => {
    const r = await fhir(p, undefined, 'GET', '/quality/metadata');
    const measure = (
      r.json.rest as { resource: { type: string; operation?: { name: string }[] }[] }[]
    )[0]?.resource.find((x) => x.type === 'Measure');
    assert.deepEqual(measure?.operation?.map((o) => o.name).sort(), [
      'care-gaps',
      'data-requirements',
      'evaluate-measure',
      'submit-data',
    ]);
  });

  test('the proportion measure needs completed Procedures from its three ValueSets', async () => {
    const r = await fhir(p, clinic, 'GET', `/quality/Measure/${PROPORTION.id}/$data-requirements?${Q}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.resourceType, 'Library');
    const reqs = r.json.dataRequirement as { type: string; codeFilter: { path: string; valueSet?: string }[] }[];
    assert.deepEqual(
      reqs.map((d) => [d.type, d.codeFilter.find((c) => c.path === 'code')?.valueSet]),
      [
        ['Procedure', 'http://example.com/exampleId'],
        ['Procedure', 'http://example.com/exampleId2'],
        ['Procedure', 'http://example.com/exampleId3'],
      ],
    );
  });

  test('the logic is read as the caller: granular Measure and Library scopes narrow it', async () => {
    const logic = async (client: string, scope: string) => {
      const c = await secretClient(p, client, scope);
      await grant(p, { partition: 'quality', client, scope: 'system/*.rs' });
      return fhir(p, c, 'GET', `/quality/Measure/${PROPORTION.id}/$data-requirements?${Q}`);
    };
    const drafts = await logic('logic-drafts', 'system/Measure.rs?status=draft system/Library.rs system/ValueSet.rs');
    assert.equal(drafts.status, 200, drafts.text);
    const active = await logic('logic-active', 'system/Measure.rs?status=active system/Library.rs system/ValueSet.rs');
    assert.equal(active.status, 403, 'a draft Measure outside the scope');
    const retired = await logic(
      'logic-retired',
      'system/Measure.rs system/Library.rs?status=retired system/ValueSet.rs',
    );
    assert.equal(retired.status, 422);
    assert.match(
      retired.text,
      /Library http:\/\/example.com\/Library\/library-ProportionBooleanTest .* is not in this vault/,
    );
  });

  test('the ratio measure needs Encounters from its ValueSet', async () => {
    const r = await fhir(p, clinic, 'POST', `/quality/Measure/${RATIO.id}/$data-requirements`, {
      resourceType: 'Parameters',
      parameter: [
        { name: 'periodStart', valueDate: PERIOD.start },
        { name: 'periodEnd', valueDate: PERIOD.end },
      ],
    });
    assert.equal(r.status, 200, r.text);
    const reqs = r.json.dataRequirement as { type: string; codeFilter?: { valueSet?: string }[] }[];
    assert.ok(
      reqs.some(
        (d) => d.type === 'Encounter' && d.codeFilter?.some((c) => c.valueSet === 'http://example.com/exampleId'),
      ),
    );
    assert.ok(reqs.every((d) => d.type === 'Encounter'));
  });
});

describe('$evaluate-measure', () => {
  test('individual reports match the expected populations of the proportion measure', async () => {
    const expected = {
      [PROPORTION.ipp]: { 'initial-population': 1, denominator: 0, numerator: 0 },
      [PROPORTION.denom]: { 'initial-population': 1, denominator: 1, numerator: 0 },
    };
    for (const [patient, want] of Object.entries(expected)) {
      const r = await fhir(
        p,
        clinic,
        'GET',
        `/quality/Measure/${PROPORTION.id}/$evaluate-measure?${Q}&subject=Patient/${patient}&reportType=individual`,
      );
      assert.equal(r.status, 200, r.text);
      const report = r.json as unknown as Report;
      assert.equal(report.type, 'individual');
      assert.equal(report.subject?.reference, `Patient/${patient}`);
      assert.deepEqual(populations(report), want, patient);
    }
  });

  test('the population report counts both patients and scores 0 of 1', async () => {
    const r = await fhir(
      p,
      clinic,
      'GET',
      `/quality/Measure/${PROPORTION.id}/$evaluate-measure?${Q}&reportType=population`,
    );
    assert.equal(r.status, 200, r.text);
    const report = r.json as unknown as Report;
    assert.equal(report.type, 'summary');
    assert.deepEqual(populations(report), { 'initial-population': 2, denominator: 1, numerator: 0 });
    assert.equal(report.group[0]?.measureScore?.value, 0);
  });

  test('subject-list names the patients of each population', async () => {
    const r = await fhir(
      p,
      clinic,
      'GET',
      `/quality/Measure/${PROPORTION.id}/$evaluate-measure?${Q}&reportType=subject-list`,
    );
    assert.equal(r.status, 200, r.text);
    const report = r.json as unknown as Report;
    const denominator = report.group[0]?.population?.find((x) => x.code?.coding?.[0]?.code === 'denominator');
    const list = (report.contained ?? []).find((c) => `#${c.id}` === denominator?.subjectResults?.reference) as {
      entry: { item: { reference: string } }[];
    };
    assert.deepEqual(
      list.entry.map((e) => e.item.reference),
      [`Patient/${PROPORTION.denom}`],
    );
  });

  test('ratio measure: the Encounter observations per population match the expected days', async () => {
    const measure = (await fhir(p, clinic, 'GET', `/quality/Measure/${RATIO.id}`)).json;
    const expected: Record<string, { denominator: number[]; numerator: number[] }> = {
      'patient-2enc-1in-all-1daylong.json': { denominator: [1], numerator: [1] },
      'patient-2enc-1in-numer-only.json': { denominator: [], numerator: [1] },
      'patient-2enc-1in-denom-only.json': { denominator: [1], numerator: [] },
      'patient-2enc-1in-denom-1in-numer.json': { denominator: [1], numerator: [3] },
    };
    let ipp = 0;
    for (const pt of patientsOf('ratio-encounter')) {
      const r = await fhir(
        p,
        clinic,
        'GET',
        `/quality/Measure/${RATIO.id}/$evaluate-measure?${Q}&subject=${pt.patient}`,
      );
      assert.equal(r.status, 200, r.text);
      const report = r.json as unknown as Report;
      const want = expected[pt.file];
      ipp += populations(report)['initial-population'] ?? 0;
      assert.deepEqual(
        {
          denominator: observations(measure, report, 'denominator'),
          numerator: observations(measure, report, 'numerator'),
        },
        want,
        pt.file,
      );
    }
    const all = (await fhir(p, clinic, 'GET', `/quality/Measure/${RATIO.id}/$evaluate-measure?${Q}`))
      .json as unknown as Report;
    // The population report adds up the individual ones: observation sums, numerator 1+1+3 over denominator 1+1+1.
    assert.equal(populations(all)['initial-population'], ipp);
    assert.equal(all.group[0]?.measureScore?.value, 5 / 3);
  });

  test('the calculation is audited with the patients it read', async () => {
    await fhir(
      p,
      clinic,
      'GET',
      `/quality/Measure/${PROPORTION.id}/$evaluate-measure?${Q}&subject=${PROPORTION.denom}`,
      undefined,
      {
        'x-request-id': 'evaluate-1',
      },
    );
    const { events } = await p.store.audit.search({ requestId: 'evaluate-1', limit: 10, offset: 0 });
    assert.equal(events.length, 1);
    const e = JSON.parse(events[0] as string) as {
      subtype: { code: string }[];
      entity: { what: { reference: string } }[];
    };
    assert.equal(e.subtype[0]?.code, 'operation');
    const what = e.entity.map((x) => x.what?.reference);
    assert.ok(what.includes(`Patient/${PROPORTION.denom}`), JSON.stringify(what));
  });
});

describe('stratifiers', () => {
  type Group = { stratifier?: unknown[] } & Record<string, unknown>;
  /** A copy of a loaded measure under another id and url, its first group stratified as given. */
  async function stratified(source: string, id: string, stratifier: unknown[]) {
    const m = (await fhir(p, clinic, 'GET', `/quality/Measure/${source}`)).json as { group: Group[] };
    const copy = { ...m, id, url: `http://example.org/Measure/${id}`, group: [{ ...m.group[0], stratifier }] };
    const r = await fhir(p, clinic, 'PUT', `/quality/Measure/${id}`, copy);
    assert.equal(r.status, 201, r.text);
  }
  const strata = (r: Report) =>
    (r.group[0]?.stratifier ?? []).map((s) => ({
      id: s.id,
      value: s.stratum?.[0]?.value?.text,
      counts: Object.fromEntries(
        (s.stratum?.[0]?.population ?? [])
          .filter((x) => x.code?.coding?.[0]?.code !== 'measure-observation')
          .map((x) => [x.code?.coding?.[0]?.code, x.count]),
      ),
      score: s.stratum?.[0]?.measureScore?.value,
    }));
  const cql = (expression: string) => ({ language: 'text/cql-identifier', expression });

  test('a stratum of patients is counted and scored as its group is', async () => {
    await stratified(PROPORTION.id, 'stratified-proportion', [
      { id: 'in-denominator', code: { text: 'in-denominator' }, criteria: cql('denom') },
      { id: 'in-numerator', criteria: cql('numer') },
    ]);
    const evaluate = async (q: string) => {
      const r = await fhir(p, clinic, 'GET', `/quality/Measure/stratified-proportion/$evaluate-measure?${Q}&${q}`);
      assert.equal(r.status, 200, r.text);
      return r.json as unknown as Report;
    };
    const all = await evaluate('reportType=population');
    // The group counts both patients; the first stratum only the one in the denominator.
    assert.deepEqual(populations(all), { 'initial-population': 2, denominator: 1, numerator: 0 });
    assert.deepEqual(strata(all), [
      {
        id: 'in-denominator',
        value: 'true',
        counts: { 'initial-population': 1, denominator: 1, numerator: 0 },
        score: 0,
      },
      {
        id: 'in-numerator',
        value: 'true',
        counts: { 'initial-population': 0, denominator: 0, numerator: 0 },
        score: undefined,
      },
    ]);
    assert.deepEqual(all.group[0]?.stratifier?.[0]?.code, [{ text: 'in-denominator' }]);
    const ippOnly = await evaluate(`subject=Patient/${PROPORTION.ipp}`);
    assert.deepEqual(strata(ippOnly)[0]?.counts, { 'initial-population': 0, denominator: 0, numerator: 0 });
  });

  test('a stratum of episodes: the encounters its criteria select', async () => {
    // "numer" selects the numerator's encounters, all of them in the initial population: that stratum holds
    // exactly the group's numerator episodes.
    await stratified(RATIO.id, 'stratified-ratio', [{ id: 'inpatient', criteria: cql('numer') }]);
    const r = await fhir(p, clinic, 'GET', `/quality/Measure/stratified-ratio/$evaluate-measure?${Q}`);
    assert.equal(r.status, 200, r.text);
    const report = r.json as unknown as Report;
    const group = populations(report);
    const [stratum] = strata(report);
    assert.ok((group.numerator ?? 0) > 0 && (group.numerator ?? 0) < (group['initial-population'] ?? 0));
    assert.equal(stratum?.counts['initial-population'], group.numerator);
    assert.equal(stratum?.counts.numerator, group.numerator);
  });
});

describe('a Group as the subject (DEQM: an attributed population)', () => {
  const evaluate = (q: string) => fhir(p, clinic, 'GET', `/quality/Measure/${RATIO.id}/$evaluate-measure?${Q}&${q}`);
  const report = async (q: string) => {
    const r = await evaluate(q);
    assert.equal(r.status, 200, r.text);
    return r.json as unknown as Report;
  };
  const member = (id: string, extra: Record<string, unknown> = {}) => ({
    entity: { reference: `Patient/${id}` },
    ...extra,
  });

  test('its members during the measurement period are counted: as a population and as a subject list', async () => {
    const [a, b, c, d] = patientsOf('ratio-encounter').map((x) => x.patient);
    assert.ok(a && b && c && d);
    const group = {
      resourceType: 'Group',
      id: 'attributed',
      type: 'person',
      actual: true,
      member: [
        member(a),
        member(d, { period: { start: '2022-06-01' } }), // joined during the period
        member(b, { inactive: true }),
        member(c, { period: { end: '2021-12-31' } }), // left before it
        member('stranger'), // a Patient of another vault: not here
        { entity: { reference: 'Practitioner/someone' } },
      ],
    };
    assert.equal((await fhir(p, clinic, 'PUT', '/quality/Group/attributed', group)).status, 201);
    const measure = (await fhir(p, clinic, 'GET', `/quality/Measure/${RATIO.id}`)).json;
    // What the members' own reports add up to.
    let ipp = 0;
    const sums = { denominator: 0, numerator: 0 };
    for (const id of [a, d]) {
      const own = await report(`subject=Patient/${id}`);
      ipp += populations(own)['initial-population'] ?? 0;
      for (const k of ['denominator', 'numerator'] as const)
        sums[k] += observations(measure, own, k).reduce((x, y) => (x ?? 0) + (y ?? 0), 0) ?? 0;
    }
    const population = await report('subject=Group/attributed');
    assert.equal(population.type, 'summary');
    assert.equal(population.subject?.reference, 'Group/attributed');
    assert.equal(populations(population)['initial-population'], ipp);
    assert.equal(population.group[0]?.measureScore?.value, sums.numerator / sums.denominator);
    // The whole vault differs: the group is not everyone.
    const everyone = await report('reportType=population');
    assert.notEqual(populations(everyone)['initial-population'], ipp);

    const list = await report('subject=Group/attributed&reportType=subject-list');
    assert.equal(list.type, 'subject-list');
    const listed = (list.contained ?? []).flatMap((x) =>
      ((x as { entry?: { item: { reference: string } }[] }).entry ?? []).map((e) => e.item.reference),
    );
    assert.ok(listed.length > 0);
    assert.ok(
      listed.every((r) => r === `Patient/${a}` || r === `Patient/${d}`),
      listed.join(),
    );
    // An individual report is of one patient.
    assert.equal((await evaluate('subject=Group/attributed&reportType=individual')).status, 400);
  });

  test("care gaps of a group are its members' gaps; a group of another vault is not found", async () => {
    const gaps = async (group: string) => {
      const r = await fhir(
        p,
        clinic,
        'GET',
        `/quality/Measure/$care-gaps?${Q}&measureId=${PROPORTION.id}&status=open-gap&subject=Group/${group}`,
      );
      assert.equal(r.status, 200, r.text);
      return (
        (r.json.parameter ?? []) as { resource: { entry: { resource: { subject?: { reference: string } } }[] } }[]
      ).map((x) => x.resource.entry[0]?.resource.subject?.reference);
    };
    for (const [id, patient] of [
      ['with-gap', PROPORTION.denom],
      ['without-gap', PROPORTION.ipp],
    ] as const) {
      const g = { resourceType: 'Group', id, type: 'person', actual: true, member: [member(patient)] };
      assert.equal((await fhir(p, clinic, 'PUT', `/quality/Group/${id}`, g)).status, 201);
    }
    assert.deepEqual(await gaps('with-gap'), [`Patient/${PROPORTION.denom}`]);
    assert.deepEqual(await gaps('without-gap'), []);
    const theirs = { resourceType: 'Group', id: 'theirs', type: 'person', actual: true, member: [member('stranger')] };
    assert.equal((await fhir(p, clinic, 'PUT', '/elsewhere/Group/theirs', theirs)).status, 201);
    const r = await evaluate('subject=Group/theirs');
    assert.equal(r.status, 404);
    assert.doesNotMatch(r.text, /elsewhere|stranger/);
    assert.equal((await evaluate('subject=Organization/umcg')).status, 400);
  });
});

describe('$care-gaps', () => {
  test('an open gap for the denominator-only patient and none for the others', async () => {
    const r = await fhir(
      p,
      clinic,
      'GET',
      `/quality/Measure/$care-gaps?${Q}&measureId=${PROPORTION.id}&status=open-gap`,
    );
    assert.equal(r.status, 200, r.text);
    const docs = ((r.json.parameter ?? []) as { name: string; resource: Bundle }[]).map((x) => x.resource);
    assert.equal(docs.length, 1);
    const doc = docs[0] as Bundle;
    assert.equal(doc.type, 'document');
    const types = (doc.entry ?? []).map((e) => e.resource?.resourceType);
    assert.equal(types[0], 'Composition');
    assert.ok(types.includes('MeasureReport') && types.includes('DetectedIssue'), types.join());
    const composition = doc.entry?.[0]?.resource as { subject: { reference: string } };
    assert.equal(composition.subject.reference, `Patient/${PROPORTION.denom}`);
    const none = await fhir(
      p,
      clinic,
      'GET',
      `/quality/Measure/$care-gaps?${Q}&measureId=${PROPORTION.id}&status=open-gap&subject=Patient/${PROPORTION.ipp}`,
    );
    assert.equal(none.status, 200);
    assert.deepEqual(none.json.parameter ?? [], []);
  });

  test('status is required and a ratio measure has no gaps to report', async () => {
    assert.equal(
      (await fhir(p, clinic, 'GET', `/quality/Measure/$care-gaps?${Q}&measureId=${PROPORTION.id}`)).status,
      400,
    );
    const ratio = await fhir(
      p,
      clinic,
      'GET',
      `/quality/Measure/$care-gaps?${Q}&measureId=${RATIO.id}&status=open-gap`,
    );
    assert.equal(ratio.status, 422);
    assert.match(ratio.text, /ratio/);
  });
});

describe('bad input: clear OperationOutcomes', () => {
  const evaluate = (id: string, q = Q) => fhir(p, clinic, 'GET', `/quality/Measure/${id}/$evaluate-measure?${q}`);

  test('a period that ends before it starts, a bad date, an unknown report type', async () => {
    const r = await evaluate(PROPORTION.id, 'periodStart=2022-12-31&periodEnd=2022-01-01');
    assert.equal(r.status, 400);
    assert.match(r.text, /before periodStart/);
    assert.equal((await evaluate(PROPORTION.id, 'periodStart=soon&periodEnd=2022-01-01')).status, 400);
    assert.equal((await evaluate(PROPORTION.id, `${Q}&reportType=everything`)).status, 400);
    for (const name of ['constructor', 'toString', '__proto__']) {
      const r = await evaluate(PROPORTION.id, `${Q}&reportType=${name}`);
      assert.equal(r.status, 400, `reportType=${name}`);
      assert.match(r.text, /is not one of individual, subject-list, population/);
    }
    assert.equal((await evaluate(PROPORTION.id, `${Q}&reportType=individual`)).status, 400);
  });

  test('a subject in another vault is not found, and never counted', async () => {
    const r = await evaluate(PROPORTION.id, `${Q}&subject=Patient/stranger`);
    assert.equal(r.status, 404);
    assert.doesNotMatch(r.text, /elsewhere/);
  });

  test('a Measure without Library, a Library without ELM, ELM the engine rejects, a missing ValueSet', async () => {
    const put = (r: Record<string, unknown>) => fhir(p, clinic, 'PUT', `/quality/${r.resourceType}/${r.id}`, r);
    await put({ resourceType: 'Measure', id: 'no-logic', status: 'draft' });
    let r = await evaluate('no-logic');
    assert.equal(r.status, 422);
    assert.match(r.text, /names no Library/);

    await put({
      resourceType: 'Library',
      id: 'text-only',
      url: 'http://example.org/Library/text-only',
      status: 'draft',
      type: { coding: [{ code: 'logic-library' }] },
      content: [{ contentType: 'text/cql', data: Buffer.from('library X').toString('base64') }],
    });
    await put({
      resourceType: 'Measure',
      id: 'text-only',
      status: 'draft',
      library: ['http://example.org/Library/text-only'],
    });
    r = await evaluate('text-only');
    assert.equal(r.status, 422);
    assert.match(r.text, /has no compiled ELM/);

    const broken = {
      library: {
        identifier: { id: 'Broken', version: '1' },
        statements: { def: [{ name: 'ipp', expression: { type: 'NoSuchExpression' } }] },
      },
    };
    await put({
      resourceType: 'Library',
      id: 'broken',
      url: 'http://example.org/Library/broken',
      status: 'draft',
      type: { coding: [{ code: 'logic-library' }] },
      content: [{ contentType: 'application/elm+json', data: Buffer.from(JSON.stringify(broken)).toString('base64') }],
    });
    const measure = (await fhir(p, clinic, 'GET', `/quality/Measure/${PROPORTION.id}`)).json;
    await put({
      ...measure,
      id: 'broken',
      url: 'http://example.org/Measure/broken',
      library: ['http://example.org/Library/broken'],
    });
    r = await evaluate('broken');
    assert.equal(r.status, 422, r.text);
    assert.match(diagnostics(r), /"ipp" is not valid ELM/);
    // A population naming a statement the Library does not define.
    const renamed = structuredClone(measure) as { group: { population: { criteria: { expression: string } }[] }[] };
    const first = renamed.group[0]?.population[0];
    assert.ok(first);
    first.criteria.expression = 'nowhere';
    await put({ ...renamed, id: 'renamed' } as Record<string, unknown>);
    r = await evaluate('renamed');
    assert.equal(r.status, 422);
    assert.match(diagnostics(r), /names "nowhere", which Library ProportionBooleanTest does not define/);

    // The same measure in a vault that lacks one of its ValueSets.
    await ok(p.dataDir, 'import', PROPORTION.bundle, '--partition', 'elsewhere');
    assert.equal((await fhir(p, clinic, 'DELETE', '/elsewhere/ValueSet/exampleId2')).status, 204);
    r = await fhir(p, clinic, 'GET', `/elsewhere/Measure/${PROPORTION.id}/$evaluate-measure?${Q}`);
    assert.equal(r.status, 422);
    assert.match(r.text, /ValueSet http:\/\/example\.com\/exampleId2 .*is not in this vault/);
  });

  test('a 50 MB submission is refused synchronously with a hint; a bad asynchronous one fails at its status URL', async () => {
    const pt = patientsOf('proportion-boolean')[0] as ReturnType<typeof patientsOf>[number];
    const big = submission(PROPORTION.url, 'Organization/umcg', pt) as {
      parameter: { resource: Record<string, unknown> }[];
    };
    (big.parameter[1] as { resource: Record<string, unknown> }).resource.text = {
      status: 'generated',
      div: `<div>${'x'.repeat(50 * 1024 * 1024)}</div>`,
    };
    const r = await fhir(p, clinic, 'POST', `/quality/Measure/${PROPORTION.id}/$submit-data`, big);
    assert.equal(r.status, 413);
    assert.match(diagnostics(r), /respond-async/);

    const before = (await fhir(p, clinic, 'GET', '/quality/MeasureReport?_summary=count')).json.total;
    const bad = await fhir(
      p,
      clinic,
      'POST',
      `/quality/Measure/${PROPORTION.id}/$submit-data`,
      { resourceType: 'Parameters', parameter: [] },
      { prefer: 'respond-async' },
    );
    assert.equal(bad.status, 202);
    const done = await untilDone(bad.headers.get('content-location') as string);
    assert.equal(done.status, 400);
    assert.match(diagnostics(done), /exactly one measureReport/);
    assert.equal((await fhir(p, clinic, 'GET', '/quality/MeasureReport?_summary=count')).json.total, before);
    assert.equal(
      (await fhir(p, clinic, 'POST', '/quality/Measure/nope/$submit-data', {}, { prefer: 'respond-async' })).status,
      404,
    );
  });

  test('a submission whose MeasureReport names another Measure is refused and stores nothing', async () => {
    const pt = { ...(patientsOf('proportion-boolean')[0] as ReturnType<typeof patientsOf>[number]) };
    pt.resources = pt.resources.map((r) => ({ ...r, id: `other-${r.id}` }));
    pt.patient = `other-${pt.patient}`;
    const r = await fhir(
      p,
      clinic,
      'POST',
      `/quality/Measure/${PROPORTION.id}/$submit-data`,
      submission(RATIO.url, 'Organization/umcg', pt),
    );
    assert.equal(r.status, 400);
    assert.match(diagnostics(r), /does not name Measure/);
    assert.equal((await fhir(p, clinic, 'GET', `/quality/Patient/${pt.patient}`)).status, 404);
  });

  test('an aggregator naming a professional of the reporting organization may not submit for that organization', async () => {
    const key = await generateKeyPair('ES256', { extractable: true });
    const jwks = join(p.dataDir, 'aggregator-jwks.json');
    writeFileSync(jwks, JSON.stringify({ keys: [{ ...(await exportJWK(key.publicKey)), kid: 'agg' }] }));
    await p.register('aggregator', {
      auth: 'private_key_jwt',
      jwks,
      scope: 'system/*.cruds',
      assertUserContext: true,
      aggregator: true,
    });
    await grant(p, { partition: 'quality', client: 'aggregator', scope: 'system/*.cruds' });
    const fetchTls = tlsFetch({ ca: p.ca });
    try {
      const professional = { id: 'prof-1', role: '62247001', organizationOid: ORG_OID, name: 'A. Professional' };
      const token = await new TokenManager({
        issuer: p.base,
        clientId: 'aggregator',
        fetch: fetchTls,
        maxRetries: 0,
        auth: {
          method: 'private_key_jwt',
          privateKey: key.privateKey,
          kid: 'agg',
          claims: userContextClaims(professional),
        },
      }).getToken();
      const pt = { ...(patientsOf('proportion-boolean')[0] as ReturnType<typeof patientsOf>[number]) };
      pt.resources = pt.resources.map((r) => ({ ...r, id: `agg-${r.id}` }));
      pt.patient = `agg-${pt.patient}`;
      const r = await fhir(
        p,
        { token },
        'POST',
        `/quality/Measure/${PROPORTION.id}/$submit-data`,
        submission(PROPORTION.url, 'Organization/umcg', pt),
      );
      assert.equal(r.status, 403, r.text);
      assert.match(diagnostics(r), /not registered for an organization/);
      assert.equal((await fhir(p, clinic, 'GET', `/quality/Patient/${pt.patient}`)).status, 404);
    } finally {
      await fetchTls.close();
    }
  });

  test('a submission to a Measure outside a granular Measure scope is refused and stores nothing', async () => {
    const scoped = (status: string) =>
      secretClient(p, `submitter-${status}`, `system/Measure.rs?status=${status} system/*.cu`, {
        orgOid: ORG_OID,
        orgName: 'UMCG',
      });
    const active = await scoped('active');
    await grant(p, { partition: 'quality', client: 'submitter-active', scope: 'system/*.cruds' });
    const pt = { ...(patientsOf('proportion-boolean')[0] as ReturnType<typeof patientsOf>[number]) };
    pt.resources = pt.resources.map((r) => ({ ...r, id: `scoped-${r.id}` }));
    pt.patient = `scoped-${pt.patient}`;
    const body = submission(PROPORTION.url, 'Organization/umcg', pt);
    const r = await fhir(p, active, 'POST', `/quality/Measure/${PROPORTION.id}/$submit-data`, body);
    assert.equal(r.status, 403, 'the Measure is a draft: its read under this scope is 403');
    assert.equal((await fhir(p, active, 'GET', `/quality/Measure/${PROPORTION.id}`)).status, 403);
    assert.equal((await fhir(p, clinic, 'GET', `/quality/Patient/${pt.patient}`)).status, 404);

    const draft = await scoped('draft');
    await grant(p, { partition: 'quality', client: 'submitter-draft', scope: 'system/*.cruds' });
    const accepted = await fhir(p, draft, 'POST', `/quality/Measure/${PROPORTION.id}/$submit-data`, body);
    assert.equal(accepted.status, 200, accepted.text);
    assert.equal((await fhir(p, clinic, 'GET', `/quality/Patient/${pt.patient}`)).status, 200);
  });

  test('a token limited to one patient compartment may not calculate over the vault', async () => {
    const narrow = await secretClient(
      p,
      'narrow',
      'system/Measure.rs system/Library.rs system/ValueSet.rs system/Patient.rs?gender=female',
    );
    await grant(p, { partition: 'quality', client: 'narrow', scope: 'system/*.rs' });
    const r = await fhir(p, narrow, 'GET', `/quality/Measure/${PROPORTION.id}/$evaluate-measure?${Q}`);
    assert.equal(r.status, 403, r.text);
  });
});
