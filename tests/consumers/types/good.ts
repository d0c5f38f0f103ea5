// Must compile with tsc --noEmit --strict: every option, method, property and event of the
// package's entry, plus declared named events. The @ts-expect-error lines are negative checks
// that tsc verifies too (an expected error that does not happen is itself an error).
import {
    RealtimeClient,
    type ClientState,
    type ClientStats,
    type CloseInfo,
    type JsonValue,
    type MessageInfo,
    type OpenInfo,
    type RealtimeClientOptions,
    type ReconnectingInfo,
    type ResetInfo,
    type TransportInfo,
    type TransportName,
} from 'realtime-client';
import initRaw, { RealtimeClient as RawRealtimeClient } from 'realtime-client/raw';

interface ChatMessage {
    name: string;
    text: string;
}
// Named events: their names and payload types. An open set (with an index signature) accepts any
// other name as well.
interface AppEvents {
    [name: string]: unknown;
    chat: ChatMessage;
    typing: { name: string };
    'room:count': number;
}
interface StrictEvents {
    chat: ChatMessage;
    ping: null;
}

const options: RealtimeClientOptions = {
    transports: ['websocket', 'sse', 'long-polling'],
    connectTimeoutMs: 5000,
    reconnect: { initialDelayMs: 500, maxDelayMs: 30000, multiplier: 2, maxAttempts: null },
    outbox: { maxMessages: 10000, maxBytes: 16 * 1024 * 1024 },
};
const noReconnect = new RealtimeClient('http://127.0.0.1:8080/realtime', { reconnect: false, outbox: {} });
noReconnect.free();
// Authentication (protocol v3): a token string or a function of one, and the cookie mode.
const withToken = new RealtimeClient('http://127.0.0.1:8080/realtime', { token: 'a.b.c', credentials: 'include' });
withToken.free();
const withTokenSource = new RealtimeClient('http://127.0.0.1:8080/realtime', {
    token: async () => (await Promise.resolve('a.b.c')),
    credentials: 'same-origin',
});
withTokenSource.free();
const syncSource: RealtimeClientOptions = { token: () => 'a.b.c', credentials: 'omit' };
console.log(syncSource);

export async function run(url: string): Promise<void> {
    const client = new RealtimeClient<StrictEvents>(url, options);

    // Lifecycle events: each listener's parameters are inferred from the event name.
    const offOpen = client.on('open', (info) => {
        const sessionId: string = info.sessionId;
        const transport: TransportName = info.transport;
        const resumed: boolean = info.resumed;
        console.log(sessionId, transport, resumed);
    });
    client.on('close', ({ code, reason }: CloseInfo) => console.log(code.toFixed(), reason.length));
    client.on('error', (error) => console.log(error.message));
    client.on('state', (state) => {
        const exhaustive: 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' = state;
        console.log(exhaustive);
    });
    client.on('transport', ({ from, to, reason }: TransportInfo) => console.log(from ?? 'none', to, reason));
    client.on('reconnecting', ({ attempt, delayMs, reason }: ReconnectingInfo) => console.log(attempt + delayMs, reason));
    client.on('reset', ({ reason }: ResetInfo) => console.log(reason));
    const onMessage = (data: unknown, info: MessageInfo) => {
        const kind: 'text' | 'json' | 'binary' = info.kind;
        const seq: number = info.seq;
        const event: string | null = info.event;
        const from: string | null = info.from;
        console.log(data, kind, seq, event, from);
    };
    client.on('message', onMessage);

    // Declared named events.
    const offChat = client.on('chat', (message, info) => console.log(message.name, message.text.toUpperCase(), info.seq));
    client.on('ping', (nothing) => {
        const isNull: null = nothing;
        console.log(isNull);
    });

    await client.connect();
    await client.send('text');
    await client.send(new Uint8Array([1, 2, 3]));
    await client.send(new Uint8Array([1]).buffer);
    await client.send(new DataView(new ArrayBuffer(2)));
    await client.send({ any: 'json', nested: [1, true, null, { deep: 'yes' }], optional: undefined });
    const json: JsonValue = [1, 'two', { three: 3 }];
    await client.send(json);
    await client.send(42);
    await client.emit('chat', { name: 'ada', text: 'hello' });
    await client.emit('ping', null);

    const state: ClientState = client.state;
    const transport: TransportName | null = client.transport;
    const sessionId: string | null = client.sessionId;
    const stats: ClientStats = client.stats();
    const counters: number[] = [stats.messagesIn, stats.messagesOut, stats.bytesIn, stats.bytesOut,
        stats.reconnects, stats.fallbacks, stats.upgrades, stats.outbox];
    const rtt: number | null = stats.rttMs;
    const statsTransport: TransportName | null = stats.transport;
    console.log(state, transport, sessionId, counters, rtt, statsTransport);

    offOpen();
    offChat();
    client.off('message', onMessage);
    client.close();
    client.free();

    // An open set of named events: any name, payloads still typed for the known ones.
    const open = new RealtimeClient<AppEvents>(url);
    open.on('typing', ({ name }) => console.log(name));
    open.on('room:count', (count) => console.log(count.toFixed()));
    open.on('anything', (data: unknown) => console.log(data));
    await open.emit('room:count', 3);
    open.close();

    // Negative checks.
    // @ts-expect-error: a lifecycle name has its own listener signature.
    client.on('open', (data: string) => console.log(data));
    // @ts-expect-error: the payload of a declared event is checked.
    await client.emit('chat', { name: 'ada' });
    // @ts-expect-error: lifecycle names cannot be emitted.
    await client.emit('open', null);
    // @ts-expect-error: an undeclared event name.
    client.on('chta', () => {});
    // @ts-expect-error: a function is not a message.
    await client.send(() => 1);
    // @ts-expect-error: a transport name that does not exist.
    new RealtimeClient(url, { transports: ['websockets'] });
    // @ts-expect-error: an option of the wrong type.
    new RealtimeClient(url, { connectTimeoutMs: '5000' });
    // @ts-expect-error: a misspelt nested option.
    new RealtimeClient(url, { reconnect: { maxAttempt: 3 } });
    // @ts-expect-error: state is read-only.
    client.state = 'open';
    // @ts-expect-error: with no type parameter no named event exists.
    new RealtimeClient(url).on('chat', () => {});
}

// The explicit path: 'realtime-client/raw' is the generated module, initialised by hand.
export async function runRaw(url: string): Promise<OpenInfo | null> {
    await initRaw();
    const client = new RawRealtimeClient(url);
    client.close();
    return null;
}
