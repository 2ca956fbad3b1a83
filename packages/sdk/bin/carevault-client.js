#!/usr/bin/env node
// The external system's command line (built JavaScript: `npm run build` in this package, run by `npm install`).
import '../dist/cli.js';
