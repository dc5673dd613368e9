/**
 * The `synaxim` command line. Each subcommand lives in src/cli/commands/<name>.ts and exports a
 * yargs CommandModule as `command`. Errors a user can cause print one line (no stack) and exit 1;
 * --debug prints the stack.
 */
import yargs from 'yargs';
import { SynaximError } from '../util/errors.ts';
import { fsConditionWords } from '../util/fsErrors.ts';
import { COMMANDS } from './commands/index.ts';

export async function main(argv: string[]): Promise<void> {
  const debug = argv.includes('--debug');
  try {
    let y = yargs(argv)
      .scriptName('synaxim')
      .usage('$0 <command> [options]')
      .option('debug', { type: 'boolean', default: false, describe: 'show stack traces on errors' })
      .strict()
      .demandCommand(1, 'name a command (see --help)')
      .recommendCommands()
      .wrap(Math.min(110, process.stdout.columns || 100))
      .fail((msg, err) => {
        if (err) throw err;
        throw new SynaximError(null, msg);
      })
      .help();
    for (const c of COMMANDS) y = y.command(c);
    await y.parseAsync();
  } catch (e) {
    process.exitCode = reportError(e, debug);
  }
}

/** Print an error the way the CLI promises and return the exit code. */
export function reportError(e: unknown, debug: boolean): number {
  if (e instanceof SynaximError) {
    process.stderr.write(`synaxim: error: ${e.message}\n`);
    if (debug && e.stack) process.stderr.write(e.stack + '\n');
    return e.name === 'InterruptedError' ? 130 : 1;
  }
  const err = e as NodeJS.ErrnoException & { dest?: string };
  const words = err && typeof err === 'object' ? fsConditionWords(err.code) : null;
  if (words) {
    // File-system conditions a user causes or meets (missing file, permission, disk full, read-only
    // file system): one line naming the file when the error knows it, exit 1 — never "a bug".
    const where = err.dest ?? err.path;
    process.stderr.write(`synaxim: error: ${where ? `${where}: ` : ''}${words}${where ? '' : ` (${err.syscall ?? 'file system'})`}\n`);
    if (debug && err.stack) process.stderr.write(err.stack + '\n');
    return 1;
  }
  if (err && typeof err === 'object' && err.code && err.path) {
    process.stderr.write(`synaxim: error: ${err.path}: ${err.code}\n`);
    if (debug && err.stack) process.stderr.write(err.stack + '\n');
    return 1;
  }
  process.stderr.write(`synaxim: internal error: ${err?.message ?? String(e)}\n`);
  if (debug && err?.stack) process.stderr.write(err.stack + '\n');
  else process.stderr.write('(run with --debug for the stack trace; this is a bug, please report it)\n');
  return 2;
}
