import { defineConfig } from 'vite';

export default defineConfig({
    // Relative asset URLs: the build is served from a subdirectory (/vite/).
    base: './',
    define: { __BUNDLER__: JSON.stringify('vite') },
    // The dev server pre-bundles dependencies into node_modules/.vite/deps/, where the package's
    // `new URL('./realtime_client_bg.wasm', import.meta.url)` finds no wasm (a 404, served as
    // HTML): keep the package out of pre-bundling, as its README says. `vite build` needs nothing.
    optimizeDeps: { exclude: ['realtime-client'] },
    build: { outDir: 'dist/vite', emptyOutDir: true },
    logLevel: 'warn',
});
