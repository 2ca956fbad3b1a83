import { defineConfig } from 'vite';

// Static files served by carevault at /viewer/ (index.html) and /viewer/assets/ (hashed bundles): no CDN, no
// external fonts, no inline scripts or styles (the page's CSP has no 'unsafe-inline').
export default defineConfig({
  base: '/viewer/',
  build: { outDir: 'dist', emptyOutDir: true, assetsInlineLimit: 0, modulePreload: { polyfill: false } },
});
