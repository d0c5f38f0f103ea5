// Entry of 'realtime-client': instantiates the wasm on import (top-level await), found next to
// this file so that Vite and webpack 5 emit it as an asset. RealtimeClient is the generated class,
// exported as a local binding so that bundlers honouring "sideEffects": false cannot bypass this
// module (and the init) as they may a re-export. Explicit init(): 'realtime-client/raw'.
import init, { RealtimeClient as GeneratedRealtimeClient } from './realtime_client.js';

await init({ module_or_path: new URL('./realtime_client_bg.wasm', import.meta.url) });

export const RealtimeClient = GeneratedRealtimeClient;
