import type { FhirContext } from './context.ts';
import { FhirError } from './errors.ts';
import { dateRange } from './search/values.ts';

/** A Group's `member` as R4 has it: the entity, and whether (and when) it is a member. */
export type GroupMember = {
  entity?: { reference?: string };
  inactive?: boolean;
  period?: { start?: string; end?: string };
};

/** The members of Group/`id` of this vault, as stored now; 404 when there is none. */
export async function groupMembers(ctx: FhirContext, id: string): Promise<GroupMember[]> {
  const group = await ctx.store.resources.current(ctx.partition, 'Group', id);
  if (group?.content === undefined) throw new FhirError(404, 'not-found', `Group/${id} not found`);
  return (JSON.parse(group.content) as { member?: GroupMember[] }).member ?? [];
}

/** The id of the Patient a member is, when it is one (a relative `Patient/id`, or a URL ending so). */
export const memberPatient = (m: GroupMember): string | undefined =>
  /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(m.entity?.reference ?? '')?.[1];

/**
 * Whether a member belongs to its group at some time in [`from`, `to`) (ms): not flagged inactive, and its
 * membership period, if any, overlapping that time. An instant is [`at`, `at` + 1).
 */
export function memberDuring(m: GroupMember, from: number, to: number): boolean {
  if (m.inactive === true) return false;
  const start = m.period?.start ? dateRange(m.period.start) : undefined;
  const end = m.period?.end ? dateRange(m.period.end) : undefined;
  return (!start || start[0] < to) && (!end || from < end[1]);
}
