// Builds the demo page `parley dev` serves at `/` into crates/parley/web (committed, so the
// binary builds without npm): the SDK and the demo compiled by tsc, and the page's HTML and CSS.
import { execFileSync } from 'node:child_process';
import { copyFileSync, rmSync } from 'node:fs';

const out = '../../crates/parley/web';
rmSync(out, { recursive: true, force: true });
execFileSync('npx', ['tsc', '-p', 'tsconfig.web.json'], { stdio: 'inherit' });
copyFileSync('demo/index.html', `${out}/index.html`);
copyFileSync('demo/style.css', `${out}/style.css`);
