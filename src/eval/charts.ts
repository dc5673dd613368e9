/**
 * Charts for reports: vega-lite specs compiled with `vega-lite` and rendered to SVG in Node with
 * `vega` (headless view, renderer 'none'), so a report is one self-contained file: no scripts, no
 * network. Each function takes plain rows and returns a spec; `renderSvg` turns a spec into SVG.
 */
import * as vega from 'vega';
import * as vl from 'vega-lite';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type VlSpec = Record<string, any>;

export interface Chart {
  id: string;
  title: string;
  spec: VlSpec;
}

const WIDTH = 520;
const HEIGHT = 240;
const FONT = 'Helvetica, Arial, sans-serif';
const CONFIG = {
  font: FONT,
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#e6e6e6' },
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 260 },
  title: { fontSize: 14, anchor: 'start' },
  view: { stroke: null },
};

function base(title: string, values: unknown[]): VlSpec {
  return { title, width: WIDTH, height: HEIGHT, data: { values }, config: CONFIG };
}

/** Compile a vega-lite spec and render it to an SVG string. */
export async function renderSvg(spec: VlSpec): Promise<string> {
  const compiled = vl.compile(spec as vl.TopLevelSpec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** A bar per label with a ± error rule; log y axis when the values span more than two decades. */
export function barWithErrors(
  title: string,
  rows: { label: string; group?: string; value: number; stderr: number }[],
  yTitle: string,
  opts: { colorDomain?: string[] } = {},
): VlSpec {
  const finite = rows.filter((r) => Number.isFinite(r.value) && r.value > 0);
  const span = finite.length ? Math.max(...finite.map((r) => r.value)) / Math.min(...finite.map((r) => r.value)) : 1;
  const log = span > 100;
  const values = finite.map((r) => ({
    label: r.label,
    group: r.group ?? r.label,
    value: r.value,
    lo: log ? Math.max(r.value - r.stderr, r.value / 10) : r.value - r.stderr,
    hi: r.value + r.stderr,
  }));
  const grouped = rows.some((r) => r.group !== undefined);
  // On a log scale a bar cannot start at 0: it starts at the decade below the smallest value.
  const floor = log ? 10 ** Math.floor(Math.log10(Math.min(...values.map((v) => v.lo)))) : 0;
  const ceil = log ? 10 ** Math.ceil(Math.log10(Math.max(...values.map((v) => v.hi)))) : 0;
  const y = {
    field: 'value',
    type: 'quantitative',
    title: yTitle + (log ? ' (log scale)' : ''),
    scale: log ? { type: 'log', domain: [floor, ceil] } : { zero: true },
  };
  const baseline = log ? { y2: { datum: floor } } : {};
  const x = grouped
    ? { field: 'group', type: 'nominal', title: null, axis: { labelAngle: 0, labelLimit: 160 } }
    : { field: 'label', type: 'nominal', title: null, sort: null, axis: { labelAngle: -20, labelLimit: 200 } };
  const xOffset = grouped ? { xOffset: { field: 'label', type: 'nominal', sort: null } } : {};
  const color = {
    field: 'label',
    type: 'nominal',
    title: grouped ? 'run' : 'configuration',
    sort: null,
    legend: grouped ? {} : null,
    ...(opts.colorDomain ? { scale: { domain: opts.colorDomain } } : {}),
  };
  return {
    ...base(title, values),
    layer: [
      { mark: { type: 'bar', tooltip: true }, encoding: { x, ...xOffset, y, ...baseline, color } },
      { mark: { type: 'rule', color: '#333' }, encoding: { x, ...xOffset, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } } },
    ],
  };
}

/** Lines with points: one series per `series`, x and y quantitative, optional log scales. */
export function lines(
  title: string,
  rows: { series: string; x: number; y: number }[],
  opts: {
    xTitle: string;
    yTitle: string;
    xLog?: boolean;
    yLog?: boolean;
    yDomain?: [number, number];
    /** x takes whole numbers only (layer indices). */
    xInteger?: boolean;
    /** d3 format strings for the axis labels, e.g. '~s' (SI prefixes). */
    xFormat?: string;
    yFormat?: string;
    /** Fix series → colour across charts. */
    colorDomain?: string[];
  },
): VlSpec {
  const ok = rows.filter((r) => Number.isFinite(r.x) && Number.isFinite(r.y) && (!opts.xLog || r.x > 0) && (!opts.yLog || r.y > 0));
  return {
    ...base(title, ok),
    mark: { type: 'line', point: true, tooltip: true },
    encoding: {
      x: {
        field: 'x',
        type: 'quantitative',
        title: opts.xTitle,
        scale: opts.xLog ? { type: 'log' } : { zero: false },
        axis: { ...(opts.xInteger ? { tickMinStep: 1, format: 'd' } : {}), ...(opts.xFormat ? { format: opts.xFormat } : {}) },
      },
      y: {
        field: 'y',
        type: 'quantitative',
        title: opts.yTitle,
        scale: { ...(opts.yLog ? { type: 'log' } : { zero: false }), ...(opts.yDomain ? { domain: opts.yDomain } : {}) },
        axis: opts.yFormat ? { format: opts.yFormat } : {},
      },
      color: { field: 'series', type: 'nominal', title: null, sort: null, ...(opts.colorDomain ? { scale: { domain: opts.colorDomain } } : {}) },
    },
  };
}
