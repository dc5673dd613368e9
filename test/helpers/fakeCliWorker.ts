/**
 * A stand-in for cliWorker.ts speaking the same protocol, for CliWorker's own test
 * (test/cliWorker.process.test.ts): `["answer", ms, code, text]` answers after `ms` with exit
 * code `code` and `text` on stdout; `["exit", code]` ends the process mid-invocation;
 * `["stray"]` first prints a result line with a wrong id, then answers "ok".
 */
import readline from 'node:readline';

const reply = (id: number, code: number, stdout: string) => process.stdout.write('@@result ' + JSON.stringify({ id, code, stdout, stderr: '', seconds: 0 }) + '\n');

process.stdout.write('@@ready\n');
for await (const line of readline.createInterface({ input: process.stdin })) {
  const { id, args } = JSON.parse(line) as { id: number; args: string[] };
  if (args[0] === 'exit') process.exit(Number(args[1]));
  if (args[0] === 'stray') {
    reply(id - 1, 0, 'stray');
    reply(id, 0, 'ok');
    continue;
  }
  await new Promise((r) => setTimeout(r, Number(args[1])));
  reply(id, Number(args[2]), args[3] ?? '');
}
