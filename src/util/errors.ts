/**
 * User-facing errors. Every problem a user can cause (bad file, bad flag, missing model) is a
 * SynaximError: the CLI prints its one-line message (`file: what is wrong`) and exits non-zero,
 * with the stack only under --debug. Anything else is a bug and keeps its stack.
 */
export class SynaximError extends Error {
  readonly file: string | null;
  constructor(file: string | null, message: string) {
    super(file ? `${file}: ${message}` : message);
    this.name = 'SynaximError';
    this.file = file;
  }
}

/** Throw a SynaximError naming `file` (or nothing, for errors not about a file). */
export function fail(file: string | null, message: string): never {
  throw new SynaximError(file, message);
}

/** Thrown when a run is interrupted (Ctrl-C) after it has saved what it must. */
export class InterruptedError extends SynaximError {
  constructor(message = 'interrupted') {
    super(null, message);
    this.name = 'InterruptedError';
  }
}
