/**
 * Ctrl-C (SIGINT) and SIGTERM for the long commands (distill, eval, sweep), handled one way: the
 * first signal only raises a flag — the command finishes its current unit of work, saves what it
 * must (distill: a checkpoint) and throws an InterruptedError (exit 130); a second signal exits at
 * once with 130, saving nothing more.
 */

export interface InterruptWatch {
  /** A signal has arrived since `watchInterrupts`. */
  interrupted(): boolean;
  /** Remove the handlers (always call it, in a finally). */
  stop(): void;
}

export interface InterruptMessages {
  /** Written to stderr at the first signal (what the command will do now); none by default. */
  first?: string;
  /** Written to stderr at the second signal, just before exiting 130. */
  second: string;
}

/** Exit status of a run stopped by a signal (128 + SIGINT). */
export const INTERRUPTED_EXIT_CODE = 130;

/** Watch for SIGINT/SIGTERM until `stop()`. */
export function watchInterrupts(messages: InterruptMessages): InterruptWatch {
  let signals = 0;
  const onSignal = () => {
    signals += 1;
    if (signals > 1) {
      process.stderr.write(messages.second);
      process.exit(INTERRUPTED_EXIT_CODE);
      return;
    }
    if (messages.first) process.stderr.write(messages.first);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    interrupted: () => signals > 0,
    stop: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** Let pending signal handlers run between synchronous units of work. */
export const yieldToEvents = (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve));
