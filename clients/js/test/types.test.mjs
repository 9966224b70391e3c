// The hand-written types (index.d.ts) against an example application (test/types/example.ts),
// with TypeScript from the devDependencies: it must compile under `strict`, and each misuse
// marked @ts-expect-error there must be an error (an unused one fails the check).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));

test('tsc --noEmit accepts the example and catches its misuses', { timeout: 60_000 }, () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const run = spawnSync(process.execPath, [tsc, '--noEmit', '-p', path.join(HERE, 'types')], { encoding: 'utf8' });
  assert.equal(run.status, 0, `tsc failed:\n${run.stdout}${run.stderr}`);
});
