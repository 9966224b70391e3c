// Prints the package's size as a bundler ships it: index.js minified by esbuild (a
// devDependency) and gzipped at the default level, the figure clients/js/README.md quotes.
//
//     node clients/js/scripts/size.mjs      (or: cd clients/js && npm run size)
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { transformSync } from 'esbuild';

const source = readFileSync(new URL('../index.js', import.meta.url), 'utf8');
const { code } = transformSync(source, { minify: true, format: 'esm', target: 'es2022' });
const gzip = gzipSync(code).length;
console.log(`index.js: ${source.length} bytes, minified ${code.length} bytes, minified+gzipped ${gzip} bytes (${(gzip / 1024).toFixed(2)} KiB)`);
