import type { Resource } from '../../fhir-types.js';
import { CARA, targetTypeOf } from './terminology.js';

export interface Quantity {
  value?: number;
  unit?: string;
  system?: string;
  code?: string;
}

export interface Coding {
  system?: string;
  code?: string;
  display?: string;
}

/** One thing an active Goal wants measured, with the range it should stay in (when the Goal gives one). */
export interface ActiveTarget {
  goal: Resource;
  /** The Goal's goal type (`Goal.category`), which becomes the pushed Observation's code. */
  goalType: Coding;
  /** SNOMED CT target type (ScpTargetType). */
  targetType: string;
  range?: { low?: Quantity | undefined; high?: Quantity | undefined } | undefined;
}

interface GoalTarget {
  measure?: { coding?: Coding[] };
  detailCodeableConcept?: { coding?: Coding[] };
  detailRange?: { low?: Quantity; high?: Quantity };
  extension?: {
    url?: string;
    valueCode?: string;
    valueString?: string;
    valueCoding?: Coding;
    valueCodeableConcept?: { coding?: Coding[] };
  }[];
}

/** `scp-goal-target-status` of a target entry: `active`, `on-hold`, or undefined when absent. */
function statusOf(t: GoalTarget): string | undefined {
  const ext = t.extension?.find((e) => e.url === CARA.targetStatus || e.url?.endsWith('/scp-goal-target-status'));
  if (!ext) return undefined;
  return ext.valueCode ?? ext.valueString ?? ext.valueCoding?.code ?? ext.valueCodeableConcept?.coding?.[0]?.code;
}

const measureKey = (t: GoalTarget) => targetTypeOf(t.measure) ?? JSON.stringify(t.measure?.coding ?? null);

/**
 * The active targets of the active Goals, in CarePlan order. In CARA's ScpGoal a target type and its range are
 * sibling `target` entries sharing one `measure` (the type entry carries the status extension); a Goal that puts
 * the range on the same entry as the status (type from `measure`) works too. On-hold Goals and targets are ignored.
 */
export function activeTargets(goals: Resource[]): ActiveTarget[] {
  const out: ActiveTarget[] = [];
  for (const goal of goals) {
    if (goal.lifecycleStatus !== 'active') continue;
    const categories = (goal.category as { coding?: Coding[] }[] | undefined) ?? [];
    const codings = categories.flatMap((c) => c.coding ?? []);
    const goalType = codings.find((c) => c.system === CARA.goalType) ?? codings[0];
    if (!goalType?.code) continue;
    const targets = (goal.target as GoalTarget[] | undefined) ?? [];
    const ranges = targets.filter((t) => t.detailRange);
    const typed = new Set<string>();
    for (const t of targets) {
      if (!t.detailCodeableConcept) continue;
      const targetType = targetTypeOf(t.detailCodeableConcept);
      if (!targetType) continue;
      typed.add(measureKey(t));
      if (statusOf(t) !== 'active') continue;
      const sibling = ranges.find((r) => measureKey(r) === measureKey(t));
      out.push({ goal, goalType, targetType, range: sibling?.detailRange });
    }
    for (const r of ranges) {
      // A range entry that is its own target (no sibling type entry): type from its measure, its own status.
      if (typed.has(measureKey(r))) continue;
      const targetType = targetTypeOf(r.measure);
      if (targetType && statusOf(r) === 'active') out.push({ goal, goalType, targetType, range: r.detailRange });
    }
  }
  return out;
}
