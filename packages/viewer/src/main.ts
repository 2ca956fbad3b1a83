import { currentLang, setLang, t } from './i18n.ts';
import { type Column, type Row, renderTable } from './table.ts';

/**
 * The Zorgviewer page: who is looking, at whom, every source with its state, and the merged record by topic. The
 * session is an HttpOnly cookie; this page never sees a token. Each source is asked on its own, so a slow source
 * shows its loading state while the others are already on screen.
 */

interface Coding {
  system?: string;
  code?: string;
  display?: string;
}
interface Concept {
  text?: string;
  coding?: Coding[];
}
interface Quantity {
  value?: number;
  unit?: string;
  code?: string;
}
interface Resource {
  resourceType: string;
  id: string;
  meta?: { source?: string };
  [key: string]: unknown;
}
interface SourceResult {
  name: string;
  organization: string;
  status: 'ok' | 'no-consent' | 'no-patient' | 'multiple-patients' | 'error';
  http?: number;
  error?: string;
  warning?: string;
  count: number;
}
interface Session {
  professional: { id: string; role: string; organizationOid: string; name?: string; organizationName?: string };
  patient: { bsn: string; name?: string; birthDate?: string };
}

type Tab = 'labs' | 'vitals' | 'conditions' | 'procedures' | 'allergies' | 'documents';
const TABS: Tab[] = ['labs', 'vitals', 'conditions', 'procedures', 'allergies', 'documents'];

const state = {
  session: undefined as Session | undefined,
  sources: [] as { name: string; organization: string; result?: SourceResult }[],
  resources: [] as Resource[],
  tab: 'labs' as Tab,
  filter: '',
  newestFirst: true,
};

const $ = (id: string) => document.getElementById(id) as HTMLElement;
const el = <K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, cls?: string): HTMLElementTagNameMap[K] => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
};

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { headers: { accept: 'application/json' }, credentials: 'same-origin' });
  if (!res.ok) {
    const body = (await res.json().catch(() => undefined)) as { issue?: { diagnostics?: string }[] } | undefined;
    throw Object.assign(new Error(body?.issue?.[0]?.diagnostics ?? `HTTP ${res.status}`), { status: res.status });
  }
  return (await res.json()) as T;
}

const concept = (c: unknown): string => {
  const x = c as Concept | undefined;
  return x?.text ?? x?.coding?.find((k) => k.display)?.display ?? x?.coding?.[0]?.code ?? '';
};
const quantity = (q: unknown): string => {
  const x = q as Quantity | undefined;
  return x?.value === undefined ? '' : `${x.value}${(x.unit ?? x.code) ? ` ${x.unit ?? x.code}` : ''}`;
};
const day = (s: unknown): string => (typeof s === 'string' ? s.slice(0, 10) : '');
/** A status code (or a concept's first code) in the reader's language. */
const statusText = (v: unknown): string => {
  const code = typeof v === 'string' ? v : ((v as Concept | undefined)?.coding?.[0]?.code ?? '');
  return t().statuses[code] ?? (typeof v === 'string' ? v : concept(v));
};
const sourceName = (r: Resource) =>
  state.sources.find((s) => s.organization === r.meta?.source)?.name ?? r.meta?.source ?? '';
const categoryOf = (r: Resource) =>
  ((r.category as Concept[] | undefined) ?? []).flatMap((c) => (c.coding ?? []).map((k) => k.code));

function renderWho(): void {
  const s = state.session;
  if (!s) return;
  const p = s.professional;
  $('who').textContent = `${p.name ?? p.id} · ${p.organizationName ?? p.organizationOid}`;
  const banner = $('banner');
  banner.replaceChildren(
    el('strong', s.patient.name ?? '—', 'name'),
    el('span', `${t().born} ${s.patient.birthDate ?? '—'}`),
    el('span', `${t().bsn} ${s.patient.bsn}`),
  );
}

function renderSources(): void {
  const list = $('sources');
  const warnings = $('warnings');
  list.replaceChildren();
  warnings.replaceChildren();
  for (const s of state.sources) {
    const li = el('li', undefined, `source ${s.result ? `state-${s.result.status}` : 'state-loading'}`);
    li.append(el('span', s.name, 'source-name'));
    const r = s.result;
    const label = !r ? t().loading : r.status === 'ok' ? t().ok(r.count) : t()[r.status];
    li.append(el('span', label, 'source-state'));
    if (!r) li.setAttribute('aria-busy', 'true');
    list.append(li);
    // The card says it for every state; what needs attention is repeated as a warning.
    if (r?.warning) warnings.append(el('li', r.warning, 'warning'));
    else if (r && r.status === 'error') warnings.append(el('li', `${s.name}: ${t().error}`, 'warning'));
  }
}

function renderFilter(): void {
  const select = $('filter') as HTMLSelectElement;
  const options = [el('option', t().allSources)];
  options[0]?.setAttribute('value', '');
  for (const s of state.sources) {
    const o = el('option', s.name);
    o.value = s.organization;
    options.push(o);
  }
  select.replaceChildren(...options);
  select.value = state.filter;
}

function renderTabs(): void {
  const tabs = $('tabs');
  tabs.replaceChildren(
    ...TABS.map((tab) => {
      const b = el('button', t()[tab], 'tab');
      b.type = 'button';
      b.id = `tab-${tab}`;
      b.setAttribute('role', 'tab');
      b.setAttribute('aria-selected', String(tab === state.tab));
      b.tabIndex = tab === state.tab ? 0 : -1;
      b.addEventListener('click', () => selectTab(tab));
      b.addEventListener('keydown', (e) => {
        const i = TABS.indexOf(state.tab);
        const next =
          e.key === 'ArrowRight'
            ? TABS[(i + 1) % TABS.length]
            : e.key === 'ArrowLeft'
              ? TABS[(i + TABS.length - 1) % TABS.length]
              : undefined;
        if (next) {
          e.preventDefault();
          selectTab(next);
          document.getElementById(`tab-${next}`)?.focus();
        }
      });
      return b;
    }),
  );
  $('panel').setAttribute('aria-labelledby', `tab-${state.tab}`);
}

function selectTab(tab: Tab): void {
  state.tab = tab;
  renderTabs();
  renderPanel();
}

const INTERPRETATION: Record<string, { icon: string; label: () => string; cls: string }> = {
  H: { icon: '▲', label: () => t().high, cls: 'flag-high' },
  HH: { icon: '▲▲', label: () => t().high, cls: 'flag-high' },
  L: { icon: '▼', label: () => t().low, cls: 'flag-low' },
  LL: { icon: '▼▼', label: () => t().low, cls: 'flag-low' },
  A: { icon: '!', label: () => t().abnormal, cls: 'flag-abnormal' },
  AA: { icon: '‼', label: () => t().critical, cls: 'flag-critical' },
};

function interpretationCell(r: Resource): Row['cells'][number] {
  const codes = ((r.interpretation as Concept[] | undefined) ?? []).flatMap((c) =>
    (c.coding ?? []).map((k) => k.code ?? ''),
  );
  const hit = codes.map((c) => INTERPRETATION[c]).find(Boolean);
  if (!hit) return { text: codes.join(', ') };
  return { text: `${hit.icon} ${hit.label()}`, cls: hit.cls, title: codes.join(', ') };
}

function rangeOf(r: Resource): string {
  const range = (r.referenceRange as { low?: Quantity; high?: Quantity }[] | undefined)?.[0];
  if (!range) return '';
  const unit = range.high?.unit ?? range.low?.unit ?? '';
  return `${range.low?.value ?? ''} .. ${range.high?.value ?? ''} ${unit}`.trim();
}

function rowsFor(tab: Tab): { columns: Column[]; rows: Row[] } {
  const T = t();
  const visible = state.resources.filter((r) => !state.filter || r.meta?.source === state.filter);
  const of = (type: string) => visible.filter((r) => r.resourceType === type);
  const cell = (text: string) => ({ text });
  switch (tab) {
    case 'labs':
    case 'vitals': {
      const wanted = tab === 'labs' ? 'laboratory' : 'vital-signs';
      const obs = of('Observation').filter((r) => categoryOf(r).includes(wanted));
      const columns: Column[] =
        tab === 'labs'
          ? [T.source, T.date, T.test, T.result, T.interpretation, T.range, T.specimen, T.status].map((h) => ({
              header: h,
            }))
          : [T.source, T.date, T.measurement, T.value, T.status].map((h) => ({ header: h }));
      const rows = obs.map((r) => {
        const date = day(
          r.effectiveDateTime ?? (r.effectivePeriod as { start?: string } | undefined)?.start ?? r.issued,
        );
        const base = [
          cell(sourceName(r)),
          cell(date),
          cell(concept(r.code)),
          cell(quantity(r.valueQuantity) || concept(r.valueCodeableConcept) || String(r.valueString ?? '')),
        ];
        const cells =
          tab === 'labs'
            ? [
                ...base,
                interpretationCell(r),
                cell(rangeOf(r)),
                cell((r.specimen as { display?: string } | undefined)?.display ?? '—'),
                cell(statusText(r.status)),
              ]
            : [...base, cell(statusText(r.status))];
        return { key: `${r.meta?.source}/${r.id}`, date, cells };
      });
      return { columns, rows };
    }
    case 'conditions':
      return {
        columns: [T.source, T.date, T.problem, T.status].map((h) => ({ header: h })),
        rows: of('Condition').map((r) => {
          const date = day(r.onsetDateTime ?? r.recordedDate);
          return {
            key: `${r.meta?.source}/${r.id}`,
            date,
            cells: [cell(sourceName(r)), cell(date), cell(concept(r.code)), cell(statusText(r.clinicalStatus))],
          };
        }),
      };
    case 'procedures':
      return {
        columns: [T.source, T.date, T.procedure, T.status].map((h) => ({ header: h })),
        rows: of('Procedure').map((r) => {
          const date = day(r.performedDateTime ?? (r.performedPeriod as { start?: string } | undefined)?.start);
          return {
            key: `${r.meta?.source}/${r.id}`,
            date,
            cells: [cell(sourceName(r)), cell(date), cell(concept(r.code)), cell(statusText(r.status))],
          };
        }),
      };
    case 'allergies':
      return {
        columns: [T.source, T.date, T.allergy, T.status].map((h) => ({ header: h })),
        rows: of('AllergyIntolerance').map((r) => {
          const date = day(r.recordedDate ?? r.onsetDateTime);
          return {
            key: `${r.meta?.source}/${r.id}`,
            date,
            cells: [cell(sourceName(r)), cell(date), cell(concept(r.code)), cell(statusText(r.clinicalStatus))],
          };
        }),
      };
    case 'documents':
      return {
        columns: [T.source, T.date, T.document, ''].map((h) => ({ header: h })),
        rows: of('DocumentReference').map((r) => {
          const date = day(r.date ?? r.indexed);
          const attachment = (r.content as { attachment?: { url?: string; title?: string } }[] | undefined)?.[0]
            ?.attachment;
          const link = attachment?.url
            ? `/viewer/api/document?${new URLSearchParams({ source: r.meta?.source ?? '', url: attachment.url, accept: 'application/pdf' })}`
            : undefined;
          return {
            key: `${r.meta?.source}/${r.id}`,
            date,
            cells: [
              cell(sourceName(r)),
              cell(date),
              cell(attachment?.title ?? concept(r.type)),
              link ? { text: T.open, href: link } : cell(''),
            ],
          };
        }),
      };
  }
}

function renderPanel(): void {
  const { columns, rows } = rowsFor(state.tab);
  const sorted = [...rows].sort((a, b) =>
    state.newestFirst ? b.date.localeCompare(a.date) : a.date.localeCompare(b.date),
  );
  $('panel').replaceChildren(
    renderTable(columns, sorted, {
      empty: t().none,
      sortLabel: state.newestFirst ? t().sortDesc : t().sortAsc,
      onSort: () => {
        state.newestFirst = !state.newestFirst;
        renderPanel();
        document.getElementById('sort-date')?.focus();
      },
    }),
  );
}

function renderAll(): void {
  document.title = t().title;
  for (const n of document.querySelectorAll<HTMLElement>('[data-i18n]')) {
    const key = n.dataset.i18n as keyof ReturnType<typeof t>;
    const v = t()[key];
    if (typeof v === 'string') n.textContent = v;
  }
  $('lang').textContent = t().switchLang;
  renderWho();
  renderSources();
  renderFilter();
  renderTabs();
  renderPanel();
}

async function main(): Promise<void> {
  document.documentElement.lang = currentLang();
  $('lang').addEventListener('click', () => {
    setLang(currentLang() === 'nl' ? 'en' : 'nl');
    renderAll();
  });
  ($('filter') as HTMLSelectElement).addEventListener('change', (e) => {
    state.filter = (e.target as HTMLSelectElement).value;
    renderPanel();
  });
  try {
    state.session = await getJson<Session>('/viewer/api/session');
    state.sources = await getJson<{ name: string; organization: string }[]>('/viewer/api/sources');
  } catch (err) {
    $('panel').replaceChildren(
      el('p', (err as { status?: number }).status === 401 ? t().noSession : (err as Error).message, 'alert'),
    );
    return;
  }
  renderAll();
  await Promise.all(
    state.sources.map(async (s) => {
      try {
        const r = await getJson<{ sources: SourceResult[]; resources: Resource[] }>(
          `/viewer/api/record?${new URLSearchParams({ source: s.organization })}`,
        );
        s.result = r.sources[0] ?? { name: s.name, organization: s.organization, status: 'error', count: 0 };
        state.resources.push(...r.resources);
      } catch (err) {
        s.result = {
          name: s.name,
          organization: s.organization,
          status: 'error',
          count: 0,
          error: (err as Error).message,
        };
      }
      renderSources();
      renderPanel();
    }),
  );
  document.body.dataset.loaded = 'true';
}

void main();
