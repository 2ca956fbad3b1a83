import type { Prefix } from './search-prefix.ts';

/** The audit trail's part of the storage interface (re-exported by types.ts). */

/** One AuditEvent as stored: its compact input plus the columns it is searched and chained by. */
export interface AuditRecord {
  id: string;
  /** ISO instant. */
  recorded: string;
  partition: string | undefined;
  /** Codes (system|code) of AuditEvent.type and .subtype; action and outcome codes. */
  type: string;
  subtype: string | undefined;
  action: string | undefined;
  outcome: string;
  requestId: string | undefined;
  correlationId: string | undefined;
  /** Search keys: patients (Patient/x), agents (client ids, user ids), entities (Type/id references). */
  refs: { kind: 'patient' | 'agent' | 'entity'; value: string }[];
  /**
   * The event's input less what the columns hold, as JSON (audit/balp.ts `StoredInput`): what the hash covers
   * and what the BALP AuditEvent is rendered from when it is read.
   */
  compact: string;
}

export interface AuditQuery {
  patient?: string[] | undefined;
  agent?: string[] | undefined;
  entity?: string[] | undefined;
  type?: string[] | undefined;
  subtype?: string[] | undefined;
  outcome?: string[] | undefined;
  requestId?: string | undefined;
  correlationId?: string | undefined;
  /** Each range constrains `recorded` (epoch ms, [lo, hi)); ranges are AND-ed. */
  recorded?: { lo: number; hi: number; prefix: Prefix }[] | undefined;
  limit: number;
  offset: number;
  /** Keyset paging: only events older than this one (its `seq`); the trail is searched newest first. */
  before?: number | undefined;
  /** Leave `total` out: counting is a pass over every match, so a page by position does not. */
  uncounted?: boolean | undefined;
}

export interface AuditVerification {
  events: number;
  ok: boolean;
  /** The first event whose content, columns or link to its predecessor do not match its hash. */
  firstBad?: { seq: number; id: string; reason: string } | undefined;
  /** Where the remaining chain starts when older events were pruned. */
  checkpoint?: AuditCheckpoint | undefined;
  /** Why the search index of the events does not match them (the events themselves verified). */
  index?: string | undefined;
}

/** The last pruned event: the remaining chain continues from its hash. */
export interface AuditCheckpoint {
  seq: number;
  hash: string;
  /** Its recorded time (epoch ms). */
  recorded: number;
  /** Events pruned so far, in all prunes. */
  pruned: number;
  /** When the last prune ran (epoch ms). */
  at: number;
}

/** One stored event with everything its hash covers, in chain order. */
export interface ChainedEvent {
  seq: number;
  id: string;
  partition: string | null;
  recorded: number;
  type: string;
  subtype: string | null;
  action: string | null;
  outcome: string;
  requestId: string | null;
  correlationId: string | null;
  refs: { kind: string; value: string }[];
  /** Stored only in rows written before 2026-12-02; '' since. */
  prevHash: string;
  hash: string;
  /** The AuditEvent JSON; undefined when the stored form cannot be unpacked. */
  content: string | undefined;
  /**
   * Events written since 2026-12-03: the compact input the hash covers (`content` is rendered from it). Older
   * events have none: their hash covers `content` itself.
   */
  compact?: string | undefined;
}

/** The audit trail: append-only, hash-chained (each event stores the hash of its predecessor). */
export interface AuditStore {
  /** Appends events outside any data transaction (token issuance, logins, reads), batched with other commits. */
  append(records: AuditRecord[]): Promise<void>;
  /** Newest first: each event's AuditEvent JSON, and (`seqs`, same order) its place in the chain, for `before`. */
  search(query: AuditQuery): Promise<{ events: string[]; seqs: number[]; total?: number }>;
  /** One event's AuditEvent JSON by its id. */
  get(id: string): Promise<string | undefined>;
  verify(): Promise<AuditVerification>;
  /** Events with `after` < seq ≤ `through` in chain order, at most `limit`. */
  chain(after: number, through: number, limit: number): Promise<ChainedEvent[]>;
  /** The seq of the last event before the first one recorded at or after `until` (epoch ms); 0 when none. */
  prefixBefore(until: number): Promise<number>;
  checkpoint(): Promise<AuditCheckpoint | undefined>;
  /**
   * Deletes the events up to `through` (and their refs) and moves the checkpoint onto the last of them, in one
   * transaction; refuses (undefined) unless that event's hash is `hash`, so nothing not exported is lost.
   */
  prune(through: number, hash: string, now: number): Promise<AuditCheckpoint | undefined>;
}
