/**
 * Progress reporting on stderr: on a terminal, one redrawn bar with percent, ETA, tokens/s and a
 * short status; otherwise (logs, CI, pipes) plain lines at most every `logEverySec` seconds and at
 * the end, so log files stay readable.
 */

export interface ProgressOptions {
  label: string;
  total: number;
  /** Override terminal detection (tests). */
  tty?: boolean;
  /** Where to write (default process.stderr). */
  stream?: { write(s: string): unknown; columns?: number; isTTY?: boolean };
  /** Minimum seconds between plain log lines. */
  logEverySec?: number;
  /** Clock in milliseconds (tests). */
  now?: () => number;
  /** Half-life of the ETA's rate estimate (default 30 s; see RateEstimator). */
  etaHalfLifeSec?: number;
}

export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '?';
  const s = Math.round(sec);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function formatRate(perSec: number): string {
  if (!Number.isFinite(perSec)) return '?';
  if (perSec >= 1e6) return `${(perSec / 1e6).toFixed(1)}M`;
  if (perSec >= 1e3) return `${(perSec / 1e3).toFixed(1)}k`;
  return perSec.toFixed(perSec < 10 ? 1 : 0);
}

/**
 * Work rate for the ETA: exponentially decayed sums of the work done and the time it took (half-life
 * `halfLifeMs`), so the estimate follows the recent pace instead of the mean since the start, which
 * carries start-up costs (compilation, caches, the first epoch's teacher states) for the whole run.
 * Time since the last report counts as time without work: a stall raises the ETA instead of freezing it.
 * Pure: every call takes the time (ms) from the caller.
 */
export class RateEstimator {
  private work = 0;
  private time = 0;
  private last: number;

  constructor(start: number, private readonly halfLifeMs = 30_000) {
    this.last = start;
  }

  /** `work` units finished at time `t` (ms). */
  add(work: number, t: number): void {
    const dt = Math.max(0, t - this.last);
    const d = 0.5 ** (dt / this.halfLifeMs);
    this.work = this.work * d + work;
    this.time = this.time * d + dt;
    this.last = t;
  }

  /** Work per ms at time `t` (NaN before any timed work). */
  rate(t: number): number {
    const pending = Math.max(0, t - this.last);
    const d = 0.5 ** (pending / this.halfLifeMs);
    const time = this.time * d + pending;
    return time > 0 && this.work > 0 ? (this.work * d) / time : NaN;
  }

  /** Seconds left for `remaining` work units at time `t` (NaN while unknown). */
  etaSeconds(remaining: number, t: number): number {
    if (remaining <= 0) return 0;
    const r = this.rate(t);
    return r > 0 ? remaining / r / 1000 : NaN;
  }
}

export class Progress {
  readonly label: string;
  readonly total: number;
  private done = 0;
  private tokens = 0;
  private readonly start: number;
  private lastLog = -Infinity;
  private lastDraw = -Infinity;
  private readonly tty: boolean;
  private readonly stream: NonNullable<ProgressOptions['stream']>;
  private readonly logEveryMs: number;
  private readonly now: () => number;
  private status = '';
  private finished = false;
  /** The ETA's rate (work since the start; a resumed run's skipped part is not counted). */
  private readonly rate: RateEstimator;

  constructor(opts: ProgressOptions) {
    this.label = opts.label;
    this.total = Math.max(0, opts.total);
    this.stream = opts.stream ?? process.stderr;
    this.tty = opts.tty ?? Boolean(this.stream.isTTY);
    this.logEveryMs = (opts.logEverySec ?? 10) * 1000;
    this.now = opts.now ?? (() => performance.now());
    this.start = this.now();
    this.rate = new RateEstimator(this.start, opts.etaHalfLifeSec === undefined ? undefined : opts.etaHalfLifeSec * 1000);
  }

  /** Start part-way (a resumed run): counts toward the bar, not toward the rates. */
  skip(n: number): void {
    this.done += n;
  }

  /** Record `n` units done (and `tokens` processed), with an optional short status (e.g. the loss). */
  tick(n = 1, tokens = 0, status?: string): void {
    const before = this.done;
    this.done = Math.min(this.total, this.done + n);
    this.tokens += tokens;
    if (status !== undefined) this.status = status;
    const t = this.now();
    this.rate.add(this.done - before, t);
    if (this.tty) {
      if (t - this.lastDraw >= 100 || this.done === this.total) {
        this.lastDraw = t;
        this.stream.write(`\r${this.line(t, this.stream.columns ?? 100)}\x1b[K`);
      }
    } else if (t - this.lastLog >= this.logEveryMs && this.done < this.total) {
      this.lastLog = t;
      this.stream.write(`${this.line(t)}\n`);
    }
  }

  /** Print a message without breaking the bar. */
  log(message: string): void {
    if (this.tty) this.stream.write(`\r\x1b[K${message}\n`);
    else this.stream.write(`${message}\n`);
  }

  finish(status?: string): void {
    if (this.finished) return;
    this.finished = true;
    if (status !== undefined) this.status = status;
    const t = this.now();
    if (this.tty) this.stream.write(`\r${this.line(t, this.stream.columns ?? 100)}\x1b[K\n`);
    else this.stream.write(`${this.line(t)}\n`);
  }

  /** The status line: label, bar (tty), count, percent, tokens/s, elapsed/ETA, status. */
  line(t = this.now(), columns?: number): string {
    const elapsed = (t - this.start) / 1000;
    const pct = this.total > 0 ? (100 * this.done) / this.total : 100;
    const eta = this.rate.etaSeconds(this.total - this.done, t);
    const tokRate = elapsed > 0 && this.tokens > 0 ? ` ${formatRate(this.tokens / elapsed)} tok/s` : '';
    const timing = this.done >= this.total ? `${formatDuration(elapsed)}` : `ETA ${formatDuration(eta)}`;
    const counts = `${this.done}/${this.total} ${pct.toFixed(0).padStart(3)}%`;
    const tail = `${counts}${tokRate} ${timing}${this.status ? ' ' + this.status : ''}`;
    if (columns === undefined) return `${this.label}: ${tail}`;
    const width = Math.max(10, Math.min(30, columns - this.label.length - tail.length - 6));
    const filled = this.total > 0 ? Math.round((width * this.done) / this.total) : width;
    return `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${tail}`.slice(0, Math.max(20, columns - 1));
  }
}

/**
 * The `(done, total, tokens, status)` callback of eval and sweep (`done`: cumulative work, e.g.
 * tokens × layers) driving a Progress bar; the first call (done = 0) starts the clock.
 */
export function cumulativeProgress(label: string, opts: Omit<ProgressOptions, 'label' | 'total'> = {}): (done: number, total: number, tokens: number, status: string) => void {
  let bar: Progress | null = null;
  let last = 0;
  return (done, total, tokens, status) => {
    bar ??= new Progress({ label, total, ...opts });
    if (done > last || tokens > 0) bar.tick(done - last, tokens, status);
    last = Math.max(last, done);
    if (done >= total) bar.finish();
  };
}
