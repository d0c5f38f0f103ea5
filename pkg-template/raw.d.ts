// Types of 'realtime-client/raw' (the generated module: call init() or initSync() yourself).
// The generated class declares `[Symbol.dispose]()`, which needs TypeScript's esnext.disposable
// lib (TypeScript 5.2+); this reference adds it for projects with an older `lib`.
/// <reference lib="esnext.disposable" />
export * from './realtime_client.js';
export { default } from './realtime_client.js';
