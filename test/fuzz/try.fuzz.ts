import { it } from 'vitest';
import { fuzzWire } from './wire.js';
import { summary } from './report.js';
it('w', () => { console.log(summary(fuzzWire(Number(process.env.N ?? 20000), 1))); }, 600000);
