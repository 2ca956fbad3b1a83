export interface Column {
  header: string;
}
export interface Row {
  key: string;
  /** YYYY-MM-DD, for sorting. */
  date: string;
  cells: { text: string; cls?: string; title?: string; href?: string }[];
}

/**
 * One topic as a table; the date column header is a button that flips the order. Wide tables scroll inside
 * their own box, so the page itself never scrolls sideways on a phone.
 */
export function renderTable(
  columns: Column[],
  rows: Row[],
  o: { empty: string; sortLabel: string; onSort: () => void },
): HTMLElement {
  const wrap = document.createElement('div');
  wrap.className = 'table-wrap';
  if (rows.length === 0) {
    const p = document.createElement('p');
    p.className = 'empty';
    p.textContent = o.empty;
    wrap.append(p);
    return wrap;
  }
  const table = document.createElement('table');
  const head = document.createElement('tr');
  columns.forEach((c, i) => {
    const th = document.createElement('th');
    th.scope = 'col';
    if (i === 1) {
      const b = document.createElement('button');
      b.type = 'button';
      b.id = 'sort-date';
      b.className = 'sort';
      b.textContent = `${c.header} (${o.sortLabel})`;
      b.addEventListener('click', o.onSort);
      th.setAttribute(
        'aria-sort',
        o.sortLabel.includes('new') || o.sortLabel.includes('nieuw') ? 'descending' : 'ascending',
      );
      th.append(b);
    } else {
      th.textContent = c.header;
    }
    head.append(th);
  });
  const thead = document.createElement('thead');
  thead.append(head);
  const tbody = document.createElement('tbody');
  for (const r of rows) {
    const tr = document.createElement('tr');
    tr.dataset.key = r.key;
    for (const c of r.cells) {
      const td = document.createElement('td');
      if (c.href) {
        const a = document.createElement('a');
        a.href = c.href;
        a.target = '_blank';
        a.rel = 'noopener';
        a.textContent = c.text;
        td.append(a);
      } else {
        td.textContent = c.text;
      }
      if (c.cls) td.className = c.cls;
      if (c.title) td.title = c.title;
      tr.append(td);
    }
    tbody.append(tr);
  }
  table.append(thead, tbody);
  wrap.append(table);
  return wrap;
}
