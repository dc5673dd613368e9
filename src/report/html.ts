/**
 * What every report page shares (eval's report, compare, and any other): tables as data rendered to
 * markdown or HTML, and one self-contained HTML page shell (inline CSS and SVG charts rendered in
 * Node, the report's data embedded as JSON; no scripts, no network). Each page brings its own CSS
 * and the blocks above its metadata list.
 */
import { renderSvg, type Chart } from './charts.ts';

/** A table as data: the same cells go to markdown and HTML. */
export interface Table {
  title: string;
  header: string[];
  rows: string[][];
  /** Cells to highlight, as [row, column] (bold in markdown, class "flag" in HTML by default). */
  flags?: [number, number][];
  note?: string;
}

// ---------------------------------------------------------------- markdown

function mdEscape(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** `### title`, the table (first column left-aligned, the others right), then the note. */
export function markdownTable(t: Table): string {
  const lines = [`### ${t.title}`, '', `| ${t.header.map(mdEscape).join(' | ')} |`, `|${t.header.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`];
  t.rows.forEach((row, ri) => {
    lines.push(`| ${row.map((cell, ci) => (t.flags?.some(([a, b]) => a === ri && b === ci) ? `**${mdEscape(cell)}**` : mdEscape(cell))).join(' | ')} |`);
  });
  if (t.note) lines.push('', t.note);
  return lines.join('\n');
}

// ---------------------------------------------------------------- html

export function htmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export interface HtmlTableOptions {
  /** id of the table element (for page CSS and tests). */
  id?: string;
  /** Wrap the table in `<div class="table-wrap">` (scrolls sideways instead of widening the page). */
  wrap?: boolean;
  /** The class of cell [row, column], if any. Default: "flag" for the table's flags. */
  cellClass?: (row: number, column: number) => string | null;
}

/** `<h2>title</h2>`, the table, then the note. */
export function htmlTable(t: Table, o: HtmlTableOptions = {}): string {
  const cellClass = o.cellClass ?? ((ri: number, ci: number) => (t.flags?.some(([a, b]) => a === ri && b === ci) ? 'flag' : null));
  const head = `<tr>${t.header.map((h) => `<th>${htmlEscape(h)}</th>`).join('')}</tr>`;
  const body = t.rows
    .map((row, ri) => `<tr>${row.map((cell, ci) => {
      const cls = cellClass(ri, ci);
      return `<td${cls ? ` class="${cls}"` : ''}>${htmlEscape(cell)}</td>`;
    }).join('')}</tr>`)
    .join('\n');
  const table = `<table${o.id ? ` id="${o.id}"` : ''}>\n<thead>${head}</thead>\n<tbody>\n${body}\n</tbody>\n</table>`;
  return `<h2>${htmlEscape(t.title)}</h2>\n${o.wrap ? `<div class="table-wrap">${table}</div>` : table}${t.note ? `\n<p class="note">${htmlEscape(t.note)}</p>` : ''}`;
}

export interface HtmlPage {
  title: string;
  /** The page's stylesheet (inlined). */
  css: string;
  /** HTML blocks between the title and the metadata list (verdict, warnings), one line each. */
  intro?: string[];
  /** Metadata lines (plain text, escaped here). */
  meta: string[];
  /** HTML blocks after the metadata: tables, notes. */
  sections: string[];
  charts: Chart[];
  /** Data embedded as `<script type="application/json" id="report-data">` (omitted when undefined). */
  data?: unknown;
}

/** One self-contained page. Charts are rendered to SVG here. */
export async function htmlPage(p: HtmlPage): Promise<string> {
  const svgs = await Promise.all(p.charts.map(async (c) => `<figure class="chart" id="chart-${htmlEscape(c.id)}" data-title="${htmlEscape(c.title)}">${await renderSvg(c.spec)}</figure>`));
  // The data travels with the page; '<' is escaped so nothing in it can close the script element.
  const data = p.data === undefined ? '' : `\n<script type="application/json" id="report-data">${JSON.stringify(p.data).replace(/</g, '\\u003c')}</script>`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${htmlEscape(p.title)}</title>
<style>${p.css}</style>
</head>
<body>
<h1>${htmlEscape(p.title)}</h1>${(p.intro ?? []).map((b) => `\n${b}`).join('')}
<ul class="meta">
${p.meta.map((m) => `<li>${htmlEscape(m)}</li>`).join('\n')}
</ul>
${p.sections.join('\n')}
<h2>Charts</h2>
<div class="charts">
${svgs.join('\n')}
</div>${data}
</body>
</html>
`;
}
