import { vaultRights } from '../../people/users.ts';
import type { Store } from '../../store/types.ts';
import type { PatientChoice } from './views.ts';

const MAX_OWN_PATIENTS = 50;

interface PatientJson {
  name?: { text?: string; given?: string[]; family?: string }[];
  birthDate?: string;
}

function label(content: string | undefined, id: string): { label: string; detail: string } {
  const p = content ? (JSON.parse(content) as PatientJson) : {};
  const n = p.name?.[0];
  const name = n?.text ?? [...(n?.given ?? []), n?.family].filter(Boolean).join(' ');
  return {
    label: name || `Patient ${id}`,
    detail: [p.birthDate ? `born ${p.birthDate}` : '', `Patient/${id}`].filter(Boolean).join(' · '),
  };
}

/** A picked patient: the form value is "partition/id". */
export function parsePatientChoice(value: unknown): { partition: string; patient: string } | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^([A-Za-z0-9_-]{1,64})\/([A-Za-z0-9\-.]{1,64})$/.exec(value);
  return m ? { partition: m[1] as string, patient: m[2] as string } : undefined;
}

/**
 * The patients a user may pick for a standalone launch (B14): their own patient (or, without one, the
 * patients in their own vault) and the patients delegated to them (seed 004 proxies), limited to `partition`
 * when the app named one vault as its `aud`.
 */
export async function patientChoices(
  store: Store,
  username: string,
  partition: string | undefined,
): Promise<PatientChoice[]> {
  const choices: PatientChoice[] = [];
  for (const right of await vaultRights(store, username)) {
    if (partition !== undefined && right.partition !== partition) continue;
    const own = right.own ? ' (you)' : '';
    if (right.patient !== undefined) {
      const v = await store.resources.current(right.partition, 'Patient', right.patient);
      if (v?.content === undefined) continue;
      const l = label(v.content, right.patient);
      choices.push({ value: `${right.partition}/${right.patient}`, label: `${l.label}${own}`, detail: l.detail });
      continue;
    }
    const { matches } = await store.resources.search(right.partition, {
      type: 'Patient',
      filters: [],
      sort: [{ key: { kind: 'id' }, descending: false }],
      limit: MAX_OWN_PATIENTS,
      offset: 0,
      total: false,
    });
    for (const m of matches) {
      const l = label(m.content, m.id);
      choices.push({ value: `${right.partition}/${m.id}`, label: l.label, detail: l.detail });
    }
  }
  return choices;
}
