// A plain webpack 5 production build of src/main.js: nothing here is specific to the package's
// wasm (webpack turns `new URL('./x.wasm', import.meta.url)` into an emitted asset by itself,
// and supports top-level await by default since 5.83).
import path from 'node:path';
import webpack from 'webpack';

const html = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>pending</title><script defer src="main.js"></script></head>
<body><p id="result">pending</p></body>
</html>
`;

export default {
    mode: 'production',
    entry: './src/main.js',
    output: { path: path.resolve(import.meta.dirname, 'dist/webpack'), filename: 'main.js', clean: true },
    plugins: [
        new webpack.DefinePlugin({ __BUNDLER__: JSON.stringify('webpack') }),
        {
            apply(compiler) {
                compiler.hooks.thisCompilation.tap('IndexHtml', (compilation) => {
                    compilation.hooks.processAssets.tap(
                        { name: 'IndexHtml', stage: webpack.Compilation.PROCESS_ASSETS_STAGE_ADDITIONAL },
                        () => compilation.emitAsset('index.html', new webpack.sources.RawSource(html)),
                    );
                });
            },
        },
    ],
};
