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
  // labelLimit 0: no limit — configuration names are never cut (the legend wraps below the plot instead).
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 0 },
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
  const positive = rows.filter((r) => Number.isFinite(r.value) && r.value > 0);
  const span = positive.length ? Math.max(...positive.map((r) => r.value)) / Math.min(...positive.map((r) => r.value)) : 1;
  const log = span > 100;
  // A zero (the reference's KLD) is a bar of no height on a linear axis; a log axis cannot show it.
  const finite = log ? positive : rows.filter((r) => Number.isFinite(r.value) && r.value >= 0);
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
    ? { field: 'group', type: 'nominal', title: null, axis: { labelAngle: 0, labelLimit: 0, labelOverlap: false } }
    : { field: 'label', type: 'nominal', title: null, sort: null, axis: { labelAngle: -30, labelLimit: 0, labelOverlap: false } };
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
      // ± 1 s.e.: a dark rule with caps, so a small error still shows as a mark.
      { mark: { type: 'rule', color: '#222', strokeWidth: 1.5 }, encoding: { x, ...xOffset, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } } },
      { mark: { type: 'tick', color: '#222', thickness: 1.5, size: 10 }, encoding: { x, ...xOffset, y: { field: 'lo', type: 'quantitative' } } },
      { mark: { type: 'tick', color: '#222', thickness: 1.5, size: 10 }, encoding: { x, ...xOffset, y: { field: 'hi', type: 'quantitative' } } },
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
    /**
     * A series that is one constant (the reference: KLD 0, relative MSE 0, cosine 1): a dashed
     * horizontal rule in its colour, labelled; where a log axis cannot show the value (0), on the
     * bottom edge of the plot.
     */
    reference?: { series: string; y: number };
  },
): VlSpec {
  const ok = rows.filter((r) => Number.isFinite(r.x) && Number.isFinite(r.y) && (!opts.xLog || r.x > 0) && (!opts.yLog || r.y > 0));
  const ref = opts.reference;
  const refLayers = ref
    ? (() => {
        const onAxis = !opts.yLog || ref.y > 0;
        const y = onAxis ? { datum: ref.y, type: 'quantitative' } : { value: HEIGHT };
        const color = { datum: ref.series, type: 'nominal' };
        // the label goes inside the plot: under a rule at the top (cosine 1, fraction 1), over one lower down
        const atTop = onAxis && ok.every((r) => r.y <= ref.y);
        const place = atTop ? { baseline: 'top', dy: 3 } : { baseline: 'bottom', dy: -3 };
        return [
          // (one datum of their own: with the chart's data they would draw one rule per row)
          { data: { values: [{}] }, mark: { type: 'rule', strokeDash: [6, 4], strokeWidth: 2 }, encoding: { y, color } },
          {
            data: { values: [{}] },
            mark: { type: 'text', align: 'left', dx: 4, fontSize: 11, ...place },
            encoding: { x: { value: 0 }, y, color, text: { value: `${ref.series}: ${ref.y}${onAxis ? '' : ' (below the log axis)'}` } },
          },
        ];
      })()
    : [];
  const line = {
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
      color: {
        field: 'series',
        type: 'nominal',
        title: null,
        sort: null,
        // below the plot, in columns: a long configuration name widens nothing and is never cut
        legend: { orient: 'bottom', direction: 'vertical', columns: 2, labelLimit: 0 },
        ...(opts.colorDomain ? { scale: { domain: opts.colorDomain } } : {}),
      },
    },
  };
  return refLayers.length ? { ...base(title, ok), layer: [line, ...refLayers] } : { ...base(title, ok), ...line };
}
