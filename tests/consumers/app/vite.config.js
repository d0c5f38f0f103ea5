import { defineConfig } from 'vite';

export default defineConfig({
    // Relative asset URLs: the build is served from a subdirectory (/vite/).
    base: './',
    define: { __BUNDLER__: JSON.stringify('vite') },
    build: { outDir: 'dist/vite', emptyOutDir: true },
    logLevel: 'warn',
});
