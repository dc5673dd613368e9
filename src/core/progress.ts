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

  constructor(opts: ProgressOptions) {
    this.label = opts.label;
    this.total = Math.max(0, opts.total);
    this.stream = opts.stream ?? process.stderr;
    this.tty = opts.tty ?? Boolean(this.stream.isTTY);
    this.logEveryMs = (opts.logEverySec ?? 10) * 1000;
    this.now = opts.now ?? (() => performance.now());
    this.start = this.now();
  }

  /** Start part-way (a resumed run): counts toward the bar, not toward the rates. */
  private offset = 0;
  skip(n: number): void {
    this.done += n;
    this.offset += n;
  }

  /** Record `n` units done (and `tokens` processed), with an optional short status (e.g. the loss). */
  tick(n = 1, tokens = 0, status?: string): void {
    this.done = Math.min(this.total, this.done + n);
    this.tokens += tokens;
    if (status !== undefined) this.status = status;
    const t = this.now();
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
    const counted = this.done - this.offset;
    const pct = this.total > 0 ? (100 * this.done) / this.total : 100;
    const rate = elapsed > 0 ? counted / elapsed : NaN;
    const eta = rate > 0 ? (this.total - this.done) / rate : NaN;
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
