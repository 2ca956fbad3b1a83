import { createLaunch } from '../../src/auth/launch-context.ts';
import { addUser, delegate } from '../../src/people/users.ts';
import { account, type Caller, fhir, grant, secretClient } from './fhir.ts';
import type { TestPlatform } from './platform.ts';

export const addPerson = (
  p: TestPlatform,
  username: string,
  password: string,
  o: { account?: string; fhirUser?: string } = {},
) => addUser(p.store, { username, password, ...o });

export const addDelegation = (p: TestPlatform, username: string, accountUrn: string, patient: string, scope?: string) =>
  delegate(p.store, { username, account: accountUrn, patient, scope });

export const launchFor = (p: TestPlatform, input: Parameters<typeof createLaunch>[1]) => createLaunch(p.store, input);

const lab = 'http://terminology.hl7.org/CodeSystem/observation-category';

/**
 * A family vault: two patients (the user's own and a child), observations of both (laboratory and
 * vital-signs), a condition, an encounter and a practitioner — loaded by a technical client.
 */
export async function familyVault(p: TestPlatform, urn: string, loader: string) {
  const { partition } = await account(p, urn);
  const admin: Caller = await secretClient(p, loader, 'system/*.cruds');
  await grant(p, { partition, client: loader, scope: 'system/*.cruds' });
  const put = async (resource: Record<string, unknown>) => {
    const r = await fhir(p, admin, 'PUT', `/${partition}/${resource.resourceType}/${resource.id}`, resource);
    if (r.status >= 300) throw new Error(`${r.status} ${r.text}`);
  };
  await put({ resourceType: 'Practitioner', id: 'dr-who', name: [{ family: 'Who', given: ['Doctor'] }] });
  await put({
    resourceType: 'Patient',
    id: 'mother',
    name: [{ family: 'Jansen', given: ['Anna'] }],
    birthDate: '1980-02-01',
  });
  await put({
    resourceType: 'Patient',
    id: 'child',
    name: [{ family: 'Jansen', given: ['Bram'] }],
    birthDate: '2015-06-30',
  });
  await put({
    resourceType: 'Encounter',
    id: 'enc-1',
    status: 'finished',
    class: { code: 'AMB' },
    subject: { reference: 'Patient/mother' },
  });
  await put({
    resourceType: 'Condition',
    id: 'cond-1',
    subject: { reference: 'Patient/mother' },
    code: { text: 'Asthma' },
  });
  for (const [id, subject, category] of [
    ['obs-m-lab', 'mother', 'laboratory'],
    ['obs-m-vital', 'mother', 'vital-signs'],
    ['obs-c-lab', 'child', 'laboratory'],
  ] as const) {
    await put({
      resourceType: 'Observation',
      id,
      status: 'final',
      category: [{ coding: [{ system: lab, code: category }] }],
      code: { text: id },
      subject: { reference: `Patient/${subject}` },
    });
  }
  return { partition, admin };
}
