// The bundled consumer (built by Vite and by webpack from this same file): the package's entry,
// no init() call.
import { RealtimeClient } from 'realtime-client';
import { probe } from './probe.js';

probe(RealtimeClient, typeof __BUNDLER__ === 'string' ? __BUNDLER__ : 'bundled');
