import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { FhirClient, FhirResponseError, MeasureDataError, submitMeasureData, TokenManager } from '@carevault/sdk';
import { tlsFetch } from '@carevault/sdk/node';
import { DEQM, PERIOD, PROPORTION, patientsOf, RATIO } from './helpers/deqm.ts';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';
import { ok } from './helpers/zorgviewer.ts';

// Issue 12 §5 (seed 002, the client's side): the SDK asks the receiving server for a measure's data requirements,
// queries an EHR — a second real carevault server — for exactly that data, and submits it; the receiving server
// then calculates the populations the test data expects.

const CLIENT_BIN = fileURLToPath(new URL('../../sdk/bin/carevault-client.js', import.meta.url));
const run = promisify(execFile);
const ORG_OID = '2.16.840.1.113883.2.4.3.8';
const Q = `periodStart=${PERIOD.start}&periodEnd=${PERIOD.end}`;

let ehr: TestPlatform;
let receiving: TestPlatform;
let receivingAdmin: Caller;
let caFile: string;
let fetchBoth: ReturnType<typeof tlsFetch>;

const populations = (r: Record<string, unknown>) =>
  Object.fromEntries(
    ((r.group as { population: { code: { coding: { code: string }[] }; count: number }[] }[])[0]?.population ?? [])
      .filter((x) => x.code.coding[0]?.code !== 'measure-observation')
      .map((x) => [x.code.coding[0]?.code, x.count]),
  );

before(async () => {
  [ehr, receiving] = await Promise.all([startPlatform(), startPlatform()]);
  caFile = join(receiving.dataDir, 'both-ca.pem');
  writeFileSync(caFile, `${ehr.ca}\n${receiving.ca}`);
  fetchBoth = tlsFetch({ ca: `${ehr.ca}\n${receiving.ca}` });

  // The EHR: the test patients' records, plus one Procedure no ValueSet of the measure names.
  await partition(ehr, 'records');
  const files = ['proportion-boolean', 'ratio-encounter'].flatMap((m) =>
    patientsOf(m as 'proportion-boolean').map((pt) => join(DEQM, m, 'patients', pt.file)),
  );
  await ok(ehr.dataDir, 'import', ...files, '--partition', 'records');
  const ehrAdmin = await secretClient(ehr, 'ehr-admin', 'system/*.cruds');
  await grant(ehr, { partition: 'records', client: 'ehr-admin', scope: 'system/*.cruds' });
  const decoy = {
    resourceType: 'Procedure',
    id: 'decoy',
    status: 'completed',
    subject: { reference: `Patient/${PROPORTION.denom}` },
    code: { coding: [{ system: 'http://snomed.info/sct', code: '80146002' }] },
  };
  assert.equal((await fhir(ehr, ehrAdmin, 'PUT', '/records/Procedure/decoy', decoy)).status, 201);

  // The receiving server: the measures and the submitting Organization.
  await partition(receiving, 'quality');
  await ok(receiving.dataDir, 'import', PROPORTION.bundle, RATIO.bundle, '--partition', 'quality');
  receivingAdmin = await secretClient(receiving, 'receiving-admin', 'system/*.cruds');
  await grant(receiving, { partition: 'quality', client: 'receiving-admin', scope: 'system/*.cruds' });
  await fhir(receiving, receivingAdmin, 'PUT', '/quality/Organization/umcg', {
    resourceType: 'Organization',
    id: 'umcg',
    identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:oid:${ORG_OID}` }],
  });
});
after(async () => {
  await fetchBoth?.close();
  await Promise.all([ehr?.stop(), receiving?.stop()]);
});

/** A reader at the EHR and a submitter (of the measuring organisation) at the receiving server: their secrets. */
async function secretPair(reader: string, submitter: string): Promise<{ ehrSecret: string; recvSecret: string }> {
  const ehrSecret = (await ehr.register(reader, { auth: 'client_secret_basic', scope: 'system/*.rs' }))
    .client_secret as string;
  await grant(ehr, { partition: 'records', client: reader, scope: 'system/*.rs' });
  const recvSecret = (
    await receiving.register(submitter, { auth: 'client_secret_basic', scope: 'system/*.cruds', orgOid: ORG_OID })
  ).client_secret as string;
  await grant(receiving, { partition: 'quality', client: submitter, scope: 'system/*.cruds' });
  return { ehrSecret, recvSecret };
}

describe('submitMeasureData (SDK) between two real servers', () => {
  test('the proportion measure: exactly the required data goes over, and the receiving server finds the gap', async () => {
    const { ehrSecret, recvSecret } = await secretPair('umcg-reader', 'umcg-submitter');
    const tokens = (p: TestPlatform, clientId: string, secret: string) =>
      new TokenManager({ issuer: p.base, clientId, auth: { method: 'client_secret_basic', secret }, fetch: fetchBoth });
    const result = await submitMeasureData({
      receiving: new FhirClient({
        baseUrl: `${receiving.fhirBase}/quality`,
        tokens: tokens(receiving, 'umcg-submitter', recvSecret),
        fetch: fetchBoth,
      }),
      ehr: new FhirClient({
        baseUrl: `${ehr.fhirBase}/records`,
        tokens: tokens(ehr, 'umcg-reader', ehrSecret),
        fetch: fetchBoth,
      }),
      measure: PROPORTION.url,
      periodStart: PERIOD.start,
      periodEnd: PERIOD.end,
      patients: [PROPORTION.ipp, PROPORTION.denom],
      reporter: 'Organization/umcg',
    });
    // Per patient: the MeasureReport, the Patient and its completed Procedures from the ValueSets.
    assert.equal(result.measureReport.length, 2);
    assert.equal(result.provenance.length, 2);
    const expectedData = patientsOf('proportion-boolean').reduce((n, pt) => n + pt.resources.length, 0);
    assert.equal(result.submitted, 2 + expectedData);
    assert.equal((await fhir(receiving, receivingAdmin, 'GET', '/quality/Procedure/decoy')).status, 404);
    const prov = await fhir(receiving, receivingAdmin, 'GET', `/quality/${result.provenance[1]}`);
    assert.equal(prov.status, 200);
    assert.ok((prov.json.target as unknown[]).length >= 2);

    const report = await fhir(
      receiving,
      receivingAdmin,
      'GET',
      `/quality/Measure/${PROPORTION.id}/$evaluate-measure?${Q}`,
    );
    assert.deepEqual(populations(report.json), { 'initial-population': 2, denominator: 1, numerator: 0 });
    const gaps = await fhir(
      receiving,
      receivingAdmin,
      'GET',
      `/quality/Measure/$care-gaps?${Q}&measureId=${PROPORTION.id}&status=open-gap`,
    );
    assert.equal((gaps.json.parameter as unknown[]).length, 1);
  });

  test('bad input is refused before anything is sent', async () => {
    const dummy = new FhirClient({ baseUrl: `${receiving.fhirBase}/quality`, fetch: fetchBoth });
    const base = { receiving: dummy, ehr: dummy, measure: 'x', patients: ['p'], reporter: 'Organization/umcg' };
    await assert.rejects(
      submitMeasureData({ ...base, periodStart: '2022-12-31', periodEnd: '2022-01-01' }),
      MeasureDataError,
    );
    await assert.rejects(
      submitMeasureData({ ...base, periodStart: '2022', periodEnd: '2022-12-31' }),
      MeasureDataError,
    );
    await assert.rejects(
      submitMeasureData({ ...base, reporter: 'umcg', periodStart: PERIOD.start, periodEnd: PERIOD.end }),
      MeasureDataError,
    );
  });
});

describe('carevault-client submit-data (CLI, mTLS at both servers)', () => {
  test('the ratio measure: a JSON summary, and the receiving server computes the expected observations', async () => {
    const certs = (p: TestPlatform, id: string, extra: Record<string, unknown>) =>
      p.register(id, { auth: 'tls_client_auth', out: join(p.dataDir, 'certs'), ...extra });
    const ehrPair = await certs(ehr, 'umcg-mtls', { scope: 'system/*.rs' });
    await grant(ehr, { partition: 'records', client: 'umcg-mtls', scope: 'system/*.rs' });
    const recvPair = await certs(receiving, 'umcg-mtls', { scope: 'system/*.cruds', orgOid: ORG_OID });
    await grant(receiving, { partition: 'quality', client: 'umcg-mtls', scope: 'system/*.cruds' });
    const patients = patientsOf('ratio-encounter').flatMap((pt) => ['--patient', pt.patient]);
    const { stdout } = await run(
      process.execPath,
      [
        CLIENT_BIN,
        'submit-data',
        '--measure',
        RATIO.id,
        '--receiving',
        `${receiving.fhirBase}/quality`,
        '--ehr',
        `${ehr.fhirBase}/records`,
        '--period-start',
        PERIOD.start,
        '--period-end',
        PERIOD.end,
        ...patients,
        '--reporter',
        'Organization/umcg',
        '--issuer',
        receiving.base,
        '--client-id',
        'umcg-mtls',
        '--cert',
        recvPair.cert as string,
        '--key',
        recvPair.key as string,
        '--ca',
        caFile,
        '--ehr-issuer',
        ehr.base,
        '--ehr-client-id',
        'umcg-mtls',
        '--ehr-cert',
        ehrPair.cert as string,
        '--ehr-key',
        ehrPair.key as string,
      ],
      { timeout: 120_000 },
    );
    const summary = JSON.parse(stdout) as {
      submitted: number;
      measureReport: string[];
      provenance: string[];
      measure: string;
    };
    assert.equal(summary.measure, RATIO.url);
    assert.equal(summary.measureReport.length, 4);
    assert.equal(summary.provenance.length, 4);
    assert.equal(summary.submitted, 4 + patientsOf('ratio-encounter').reduce((n, pt) => n + pt.resources.length, 0));
    const report = await fhir(receiving, receivingAdmin, 'GET', `/quality/Measure/${RATIO.id}/$evaluate-measure?${Q}`);
    assert.equal(report.status, 200, report.text);
    assert.equal((report.json.group as { measureScore: { value: number } }[])[0]?.measureScore.value, 5 / 3);
  });

  test('a missing option is named, exit code 1', async () => {
    await assert.rejects(
      run(process.execPath, [CLIENT_BIN, 'submit-data', '--measure', 'x'], { timeout: 30_000 }),
      (err: { code: number; stderr: string }) => {
        assert.equal(err.code, 1);
        assert.match(err.stderr, /--receiving is required/);
        return true;
      },
    );
  });
});

describe('submitMeasureData: a submission too large to send synchronously', () => {
  test('the 413 is answered by sending it again with Prefer: respond-async and polling its status', async () => {
    // Three copies of the patient's Procedure, each with 6 MB of notes: the submission is ≈ 18 MB, past the
    // 16 MiB a synchronous request may have; each copy alone is stored at the EHR as usual.
    const pt = patientsOf('proportion-boolean').find((x) => x.patient === PROPORTION.ipp);
    const procedure = pt?.resources.find((r) => r.resourceType === 'Procedure') as Record<string, unknown>;
    const ehrAdmin = await secretClient(ehr, 'ehr-big', 'system/*.cruds');
    await grant(ehr, { partition: 'records', client: 'ehr-big', scope: 'system/*.cruds' });
    for (const n of [1, 2, 3]) {
      const copy = {
        ...procedure,
        id: `big-${n}`,
        note: Array.from({ length: 6 }, () => ({ text: 'x'.repeat(1_000_000) })),
      };
      const put = await fhir(ehr, ehrAdmin, 'PUT', `/records/Procedure/big-${n}`, copy);
      assert.equal(put.status, 201, put.text.slice(0, 500));
    }
    const { ehrSecret, recvSecret } = await secretPair('big-reader', 'big-submitter');
    const sent: { method: string; prefer: string | undefined; status?: number }[] = [];
    const client = (p: TestPlatform, base: string, clientId: string, secret: string) =>
      new FhirClient({
        baseUrl: `${p.fhirBase}/${base}`,
        tokens: new TokenManager({
          issuer: p.base,
          clientId,
          auth: { method: 'client_secret_basic', secret },
          fetch: fetchBoth,
        }),
        fetch: (async (url: string, init: RequestInit) => {
          const res = await fetchBoth(url, init as never);
          const prefer = (init.headers as Record<string, string> | undefined)?.prefer;
          if (String(url).includes('$submit-data'))
            sent.push({ method: init.method ?? 'GET', prefer, status: res.status });
          return res;
        }) as never,
      });
    const o = {
      receiving: client(receiving, 'quality', 'big-submitter', recvSecret),
      ehr: client(ehr, 'records', 'big-reader', ehrSecret),
      measure: PROPORTION.id,
      periodStart: PERIOD.start,
      periodEnd: PERIOD.end,
      patients: [PROPORTION.ipp],
      reporter: 'Organization/umcg',
    };
    await assert.rejects(submitMeasureData({ ...o, async: false }), (err: unknown) => {
      assert.ok(err instanceof FhirResponseError, String(err));
      assert.equal(err.status, 413);
      return true;
    });
    sent.length = 0;
    const result = await submitMeasureData(o);
    assert.deepEqual(sent.map((s) => [s.method, s.prefer, s.status]).slice(0, 2), [
      ['POST', undefined, 413],
      ['POST', 'respond-async', 202],
    ]);
    assert.ok(
      sent.slice(2).every((s) => s.method === 'GET'),
      'then the status URL, until the outcome',
    );
    assert.equal(
      result.patients[0]?.sent,
      1 + 1 + (pt?.resources.filter((r) => r.resourceType === 'Procedure').length ?? 0) + 3,
    );
    assert.ok(result.measureReport[0], 'the MeasureReport stored by the job');
    assert.ok(result.provenance[0], "the job's Provenance, from X-Provenance of the outcome");
    for (const n of [1, 2, 3])
      assert.equal(
        (await fhir(receiving, receivingAdmin, 'GET', `/quality/Procedure/big-${n}?_elements=id`)).status,
        200,
      );
  });
});
