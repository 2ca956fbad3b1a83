import type { Resource } from '../../fhir-types.js';
import { uuidV5 } from '../../uuid.js';
import type { ActiveTarget, Coding, Quantity } from './targets.js';
import {
  CARA,
  INTERPRETATION,
  PANEL_PARTS,
  SNOMED,
  sameUnit,
  TARGET_TYPE_DISPLAY,
  targetTypeOf,
} from './terminology.js';

/** Fixed namespace of the name-based ids (RFC 9562 v5) carevault gives pushed observations. */
const ID_NAMESPACE = '3c0e6f1e-9a55-5b7c-8d0e-2f6a4b1c9d07';

export type SkipReason = 'not-relevant' | 'no-value' | 'incomparable-unit' | 'no-time' | 'not-final';

export interface PlannedObservation {
  id: string;
  resource: Resource;
  attention: boolean;
  source: string;
}

export interface Plan {
  observations: PlannedObservation[];
  skipped: { source: string; reason: SkipReason }[];
}

export interface PlanInput {
  targets: ActiveTarget[];
  accountUrn: string;
  organization: Resource;
  /** Tag code under `urn:cara:external_system`, and part of every derived id: the external system's name. */
  externalSystem: string;
  candidates: Resource[];
}

interface Measurement {
  targetType: string;
  quantity: Quantity;
  /** Came from `component` (a panel's parts belong to the panel's goal). */
  component: boolean;
}

const USABLE_STATUS = new Set(['final', 'amended', 'corrected', 'preliminary']);

/**
 * Picks the candidate observations that measure an active target of an active Goal and turns each into one
 * ScpExternalObservation (a blood-pressure panel stays one Observation with its components). A value outside
 * its target's range makes an attention point (`AA`). Nothing is guessed: no value, no time or a unit that
 * differs from the range's is skipped and counted.
 */
export async function planObservations(input: PlanInput): Promise<Plan> {
  const plan: Plan = { observations: [], skipped: [] };
  for (const obs of input.candidates) {
    const source = sourceKey(obs);
    const skip = (reason: SkipReason) => plan.skipped.push({ source, reason });
    if (obs.resourceType !== 'Observation') {
      skip('not-relevant');
      continue;
    }
    const top = targetTypeOf(obs.code as { coding?: Coding[] });
    const measurements = measurementsOf(obs, top);
    const measured = new Set([
      ...(top ? [top, ...(PANEL_PARTS[top] ?? [])] : []),
      ...measurements.map((m) => m.targetType),
    ]);
    const target = input.targets.find((t) => measured.has(t.targetType));
    if (!target) {
      skip('not-relevant');
      continue;
    }
    if (typeof obs.status === 'string' && !USABLE_STATUS.has(obs.status)) {
      skip('not-final');
      continue;
    }
    const goalTargets = input.targets.filter((t) => t.goal === target.goal);
    const goalTypes = new Set(goalTargets.map((t) => t.targetType));
    const panelWatched = top !== undefined && [top, ...(PANEL_PARTS[top] ?? [])].some((t) => goalTypes.has(t));
    const used = measurements.filter((m) => goalTypes.has(m.targetType) || (m.component && panelWatched));
    if (used.length === 0 || used.some((m) => typeof m.quantity.value !== 'number')) {
      skip('no-value');
      continue;
    }
    const rangeOf = (type: string) => goalTargets.find((t) => t.targetType === type && t.range)?.range;
    if (used.some((m) => !comparable(m.quantity, rangeOf(m.targetType)))) {
      skip('incomparable-unit');
      continue;
    }
    const effective = instantOf(obs);
    if (!effective) {
      skip('no-time');
      continue;
    }
    const outside = used.filter((m) => isOutside(m.quantity, rangeOf(m.targetType)));
    const id = await uuidV5(ID_NAMESPACE, `${input.accountUrn}|${input.externalSystem}|${source}`);
    plan.observations.push({
      id,
      source,
      attention: outside.length > 0,
      resource: externalObservation({
        id,
        input,
        goalType: target.goalType,
        effective,
        used,
        outside: outside.length > 0,
        rangeOf,
        source,
      }),
    });
  }
  return plan;
}

function measurementsOf(obs: Resource, top: string | undefined): Measurement[] {
  const out: Measurement[] = [];
  const vq = obs.valueQuantity as Quantity | undefined;
  if (top && vq) out.push({ targetType: top, quantity: vq, component: false });
  for (const c of (obs.component as { code?: { coding?: Coding[] }; valueQuantity?: Quantity }[] | undefined) ?? []) {
    const t = targetTypeOf(c.code);
    if (t) out.push({ targetType: t, quantity: c.valueQuantity ?? {}, component: true });
  }
  // A panel whose top-level code maps but that carries no value of its own still counts through its parts.
  if (top && !vq && out.length === 0) out.push({ targetType: top, quantity: {}, component: false });
  return out;
}

const unitOf = (q: Quantity | undefined) => q?.code ?? q?.unit;

function comparable(
  q: Quantity,
  range: { low?: Quantity | undefined; high?: Quantity | undefined } | undefined,
): boolean {
  if (!range) return true;
  return [range.low, range.high].every((b) => b === undefined || sameUnit(unitOf(q), unitOf(b)));
}

function isOutside(
  q: Quantity,
  range: { low?: Quantity | undefined; high?: Quantity | undefined } | undefined,
): boolean {
  const v = q.value as number;
  if (typeof range?.low?.value === 'number' && v < range.low.value) return true;
  return typeof range?.high?.value === 'number' && v > range.high.value;
}

/** The source observation's identity: its first business identifier, else its id; the derived UUID rests on it. */
function sourceKey(obs: Resource): string {
  const ident = (obs.identifier as { system?: string; value?: string }[] | undefined)?.find((i) => i.value);
  if (ident) return `${ident.system ?? ''}|${ident.value}`;
  if (obs.id) return `${obs.resourceType}/${obs.id}`;
  return `${obs.resourceType}#${JSON.stringify([obs.code, obs.effectiveDateTime, obs.valueQuantity, obs.component])}`;
}

/** effective[x] as an instant; a date without a time becomes midnight UTC of that date. */
function instantOf(obs: Resource): string | undefined {
  const raw =
    (obs.effectiveInstant as string | undefined) ??
    (obs.effectiveDateTime as string | undefined) ??
    (obs.effectivePeriod as { start?: string } | undefined)?.start ??
    (obs.issued as string | undefined);
  if (!raw) return undefined;
  const t = Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(raw) ? `${raw}T00:00:00Z` : raw);
  return Number.isNaN(t) ? undefined : new Date(t).toISOString();
}

const fmt = (q: Quantity | undefined) => (q?.value === undefined ? '' : `${q.value} ${q.unit ?? q.code ?? ''}`.trim());

function externalObservation(o: {
  id: string;
  input: PlanInput;
  goalType: Coding;
  effective: string;
  used: Measurement[];
  outside: boolean;
  rangeOf: (type: string) => { low?: Quantity | undefined; high?: Quantity | undefined } | undefined;
  source: string;
}): Resource {
  const parts = o.used.map((m) => {
    const range = o.rangeOf(m.targetType);
    const bounds = range ? ` (target ${fmt(range.low) || '…'} – ${fmt(range.high) || '…'})` : '';
    return `${TARGET_TYPE_DISPLAY[m.targetType] ?? m.targetType} ${fmt(m.quantity)}${bounds}`;
  });
  return {
    resourceType: 'Observation',
    id: o.id,
    meta: {
      profile: [CARA.externalObservationProfile],
      tag: [
        { system: CARA.namespace, code: CARA.scpTag },
        { system: CARA.externalSystem, code: o.input.externalSystem },
      ],
    },
    identifier: [
      { system: CARA.account, value: o.input.accountUrn },
      { system: CARA.externalId, value: o.source },
    ],
    status: 'final',
    code: { coding: [{ system: o.goalType.system, code: o.goalType.code, display: o.goalType.display }] },
    effectiveInstant: o.effective,
    performer: [{ reference: `Organization/${o.input.organization.id}` }],
    valueString: `${parts.join('; ')}${o.outside ? ' — outside the target range' : ''}`,
    ...(o.outside
      ? { interpretation: [{ coding: [{ system: INTERPRETATION, code: 'AA', display: 'Critical abnormal' }] }] }
      : {}),
    component: o.used.map((m) => ({
      code: { coding: [{ system: SNOMED, code: m.targetType, display: TARGET_TYPE_DISPLAY[m.targetType] }] },
      valueQuantity: m.quantity,
    })),
  };
}
