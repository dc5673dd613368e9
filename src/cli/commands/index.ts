/** The list of subcommands; each file owns one command. */
import type { CommandModule } from 'yargs';
import { command as inspect } from './inspect.ts';
import { command as convert } from './convert.ts';
import { command as importLlama2c } from './import-llama2c.ts';
import { command as fixture } from './fixture.ts';
import { command as forward } from './forward.ts';
import { command as generate } from './generate.ts';
import { command as evaluate } from './eval.ts';
import { command as compare } from './compare.ts';
import { command as distill } from './distill.ts';
import { command as demo } from './demo.ts';
import { command as bench } from './bench.ts';
import { command as sweep } from './sweep.ts';
import { command as models } from './models.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const COMMANDS: CommandModule<any, any>[] = [inspect, convert, importLlama2c, fixture, forward, generate, distill, evaluate, sweep, compare, demo, bench, models];
