// Types of the package's entry ('realtime-client'). The option, event and stats types are the
// ones wasm-bindgen generates from the crate's TypeScript section (realtime_client.d.ts); this
// file re-exports them and declares RealtimeClient generically, so that the names and payloads
// of an application's own events are checked too.
//
// The generated class declares `[Symbol.dispose]()`, which needs TypeScript's esnext.disposable
// lib (TypeScript 5.2+): the reference below adds it, so that a strict project with an older
// `lib` and without skipLibCheck still compiles.
/// <reference lib="esnext.disposable" />

import type {
    ChannelMessageInfo,
    ChannelPosition,
    ClientState,
    ClientStats,
    CloseInfo,
    ErrorCode,
    LifecycleEvent,
    MessageData,
    MessageInfo,
    OpenInfo,
    RealtimeClientOptions,
    RealtimeError,
    RealtimeEventMap,
    ReconnectingInfo,
    ReconnectOptions,
    ResetInfo,
    GapInfo,
    SubscribedInfo,
    SubscribeOptions,
    SubscriptionEventMap,
    UnsubscribedInfo,
    TransportInfo,
    TransportName,
} from './realtime_client.js';

export type {
    ChannelMessageInfo,
    ChannelPosition,
    ClientState,
    ClientStats,
    CloseInfo,
    ErrorCode,
    LifecycleEvent,
    MessageData,
    MessageInfo,
    OpenInfo,
    RealtimeClientOptions,
    RealtimeError,
    RealtimeEventMap,
    ReconnectingInfo,
    ReconnectOptions,
    ResetInfo,
    GapInfo,
    SubscribedInfo,
    SubscribeOptions,
    SubscriptionEventMap,
    UnsubscribedInfo,
    TransportInfo,
    TransportName,
};

/** A value that `JSON.stringify` turns into JSON (object members that are `undefined` are left out). */
export type JsonValue =
    | string
    | number
    | boolean
    | null
    | readonly JsonValue[]
    | { readonly [key: string]: JsonValue | undefined };

/**
 * What `send()` accepts: a string goes as text, bytes as binary, anything else as JSON.
 * The kind arrives unchanged (`MessageInfo.kind`).
 */
export type SendData = string | Uint8Array | ArrayBuffer | ArrayBufferView | JsonValue;

/** The names of an application's own events: every key of `Events` except the lifecycle names. */
export type NamedEvent<Events> = Exclude<keyof Events & string, keyof RealtimeEventMap>;

/** The listener of the named event `K`. */
export type NamedEventListener<Events, K extends keyof Events> = (data: Events[K], info: MessageInfo) => void;

/** The names of a channel's own events: every key of `Events` except the subscription's lifecycle names. */
export type ChannelEvent<Events> = Exclude<keyof Events & string, keyof SubscriptionEventMap | keyof RealtimeEventMap>;

/**
 * A subscription to one channel (from `client.subscribe()`): its messages in order, exactly
 * once, across reconnects, transport switches and session resets. `Events` maps the channel's
 * own event names to their payload types, as on the client.
 */
export interface Subscription<Events extends object = {}> {
    /** The channel's name. */
    readonly channel: string;
    /** Resolves once subscribed; rejects (with the refusal's code) if the server refuses. */
    readonly ready: Promise<void>;
    /** Publishes to the channel (every subscriber gets it, this client too); resolves on the server's ack. */
    publish(data: SendData): Promise<void>;
    /** Publishes a named event to the channel. */
    emit<K extends ChannelEvent<Events>>(event: K, data: Events[K]): Promise<void>;
    /** Ends the subscription at once: nothing more of the channel is delivered. */
    unsubscribe(): void;
    on<K extends keyof SubscriptionEventMap>(event: K, listener: SubscriptionEventMap[K]): () => void;
    on<K extends ChannelEvent<Events>>(event: K, listener: (data: Events[K], info: ChannelMessageInfo) => void): () => void;
    off<K extends keyof SubscriptionEventMap>(event: K, listener: SubscriptionEventMap[K]): void;
    off<K extends ChannelEvent<Events>>(event: K, listener: (data: Events[K], info: ChannelMessageInfo) => void): void;
}

/**
 * A realtime connection to a server, over WebSocket, SSE or long polling.
 *
 * `Events` maps the names of the application's own events to their payload types:
 * `new RealtimeClient<{ chat: { name: string; text: string } }>(url)` types `on('chat', ...)`
 * and `emit('chat', ...)`. With the default (no named events), only the lifecycle events and
 * `'message'` are accepted, so a misspelt event name does not compile. (`Events extends object`
 * rather than `Record<string, unknown>`, so that an interface without an index signature works.)
 */
export declare class RealtimeClient<Events extends object = {}> {
    /** Creates an idle client for `url` (`http://` or `https://`). Throws on a bad URL or option. */
    constructor(url: string, options?: RealtimeClientOptions);
    /** Connects; resolves once the session is open, rejects if the client closes first. */
    connect(): Promise<void>;
    /** Sends a message; resolves when the server has acknowledged it. */
    send(data: SendData): Promise<void>;
    /** Sends a named event; listeners registered with `on(event)` receive it. */
    emit<K extends NamedEvent<Events>>(event: K, data: Events[K]): Promise<void>;
    /** Adds a listener for a lifecycle event or 'message'; returns a function that removes it. */
    on<K extends keyof RealtimeEventMap>(event: K, listener: RealtimeEventMap[K]): () => void;
    /** Adds a listener for a named event; returns a function that removes it. */
    on<K extends NamedEvent<Events>>(event: K, listener: NamedEventListener<Events, K>): () => void;
    /** Removes a listener added with `on()`. */
    off<K extends keyof RealtimeEventMap>(event: K, listener: RealtimeEventMap[K]): void;
    off<K extends NamedEvent<Events>>(event: K, listener: NamedEventListener<Events, K>): void;
    /**
     * Closes for good: pending sends reject (code 'closed'), the 'close' listeners run, then every
     * listener is dropped and the window listeners, timer and transports are released. Idempotent;
     * `connect()` may start a new session afterwards (listeners must be added again).
     */
    close(): void;
    /**
     * Subscribes to `channel` (when connected, and again by itself after every resume or reset);
     * the same Subscription for a channel already subscribed. Throws on a bad name or option.
     */
    subscribe<ChannelEvents extends object = {}>(channel: string, options?: SubscribeOptions): Subscription<ChannelEvents>;
    /** The live Subscription objects. */
    subscriptions(): Subscription<any>[];
    /** Counters: messages and bytes in/out, reconnects, fallbacks, upgrades, rttMs, transport, outbox. */
    stats(): ClientStats;
    /**
     * Frees the client's memory in the WebAssembly instance (it closes first if needed). Optional
     * after `close()`, which releases everything in the page: a closed client that is not freed
     * keeps a few kilobytes of wasm memory until the page unloads. Any method called after
     * `free()` throws; the functions returned by `on()` stay safe to call.
     */
    free(): void;
    /** 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'. */
    readonly state: ClientState;
    /** The transport of the open connection, or null. */
    readonly transport: TransportName | null;
    /** The session id once a server said hello, else null. */
    readonly sessionId: string | null;
}
