//! The TypeScript types of the public API, emitted into the generated `.d.ts` (the methods'
//! signatures come from the `#[wasm_bindgen]` attributes in `mod.rs`).

use wasm_bindgen::prelude::wasm_bindgen;

#[wasm_bindgen(typescript_custom_section)]
const TYPESCRIPT: &'static str = r#"
export type TransportName = 'websocket' | 'sse' | 'long-polling';
export type ClientState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';
export interface ReconnectOptions {
  /** Upper bound of the first (random) delay. Default 500. */
  initialDelayMs?: number;
  /** Cap of any delay. Default 30000. */
  maxDelayMs?: number;
  /** Growth per attempt. Default 2. */
  multiplier?: number;
  /** Attempts before giving up; null or Infinity for unlimited (the default). */
  maxAttempts?: number | null;
}
export interface RealtimeClientOptions {
  /** Allowed transports, in preference order. Default all three. */
  transports?: TransportName[];
  /** How long a connection may take to deliver the server's hello. Default 5000. */
  connectTimeoutMs?: number;
  /** Reconnect policy, or false to never reconnect. */
  reconnect?: ReconnectOptions | boolean;
  /** Bounds of the queue of unacknowledged messages. Defaults 10000 messages, 16 MiB. */
  outbox?: { maxMessages?: number; maxBytes?: number };
  /** The credential: a string, or a function returning one (or a Promise of one), called before every connect and reconnect and for every refresh. Never logged. */
  token?: string | (() => string | Promise<string>);
  /** Cookies on every transport: 'include' sends them cross-origin too (EventSource withCredentials, fetch credentials). */
  credentials?: 'include' | 'same-origin' | 'omit';
}
/** The stable code of every error the client reports (README: "Errors"). Branch on it, never on the message. */
export type ErrorCode =
  | 'closed' | 'outbox-full' | 'too-large' | 'reset' | 'unauthorized' | 'unsupported-version'
  | 'transport-failed' | 'protocol' | 'timeout' | 'listener-threw' | 'server-closed'
  | 'retries-exhausted' | 'invalid-argument'
  | 'unsubscribed' | 'bad-channel' | 'too-many-channels' | 'rate-limited' | 'forbidden' | 'channel-closed';
/** An Error from the client: thrown, rejected or passed to 'error' listeners. */
export interface RealtimeError extends Error {
  code: ErrorCode;
  /** For 'listener-threw': what the listener threw. */
  cause?: unknown;
}
export type MessageData = string | Uint8Array | unknown;
export interface MessageInfo {
  event: string | null; seq: number; kind: 'text' | 'json' | 'binary';
  /** The verified subject of the client that published it; null for a backend publish or an open server. */
  from: string | null;
}
export interface OpenInfo { sessionId: string; transport: TransportName; resumed: boolean; }
export interface CloseInfo { code: number; reason: string; }
export interface TransportInfo { from: TransportName | null; to: TransportName; reason: string; }
export interface ReconnectingInfo { attempt: number; delayMs: number; reason: string; }
export interface ResetInfo { reason: string; }
export interface ClientStats {
  messagesIn: number; messagesOut: number; bytesIn: number; bytesOut: number;
  reconnects: number; fallbacks: number; upgrades: number;
  rttMs: number | null; transport: TransportName | null; outbox: number;
}
export interface RealtimeEventMap {
  open: (info: OpenInfo) => void;
  close: (info: CloseInfo) => void;
  error: (error: RealtimeError) => void;
  state: (state: ClientState) => void;
  transport: (info: TransportInfo) => void;
  reconnecting: (info: ReconnectingInfo) => void;
  reset: (info: ResetInfo) => void;
  message: (data: MessageData, info: MessageInfo) => void;
}
export type LifecycleEvent = Exclude<keyof RealtimeEventMap, 'message'>;
/** Listener of a named event (any name that is not a lifecycle name). */
export type NamedEventListener = (data: MessageData, info: MessageInfo) => void;
/** Where a channel's message sits: `offset` counts up by one within `epoch` (16 hex digits). */
export interface ChannelPosition { offset: number; epoch: string; }
export interface SubscribeOptions {
  /** Start after this position (one stored before a reload): the server replays what followed. */
  since?: ChannelPosition;
}
export interface ChannelMessageInfo extends MessageInfo { channel: string; offset: number; epoch: string; }
export interface SubscribedInfo { channel: string; recovered: boolean; offset: number; epoch: string; }
export interface UnsubscribedInfo { channel: string; code: ErrorCode; reason: string; }
export interface GapInfo { channel: string; epoch: string; from: number; to: number; }
export interface SubscriptionEventMap {
  subscribed: (info: SubscribedInfo) => void;
  unsubscribed: (info: UnsubscribedInfo) => void;
  gap: (info: GapInfo) => void;
  error: (error: RealtimeError) => void;
  message: (data: MessageData, info: ChannelMessageInfo) => void;
}
/** A subscription to one channel (typed generically over its events by the package's index.d.ts). */
export interface Subscription {
  readonly channel: string;
  readonly ready: Promise<void>;
  publish(data: unknown): Promise<void>;
  emit(event: string, data: unknown): Promise<void>;
  unsubscribe(): void;
  on<K extends keyof SubscriptionEventMap>(event: K, listener: SubscriptionEventMap[K]): () => void;
  on(event: string, listener: (data: MessageData, info: ChannelMessageInfo) => void): () => void;
  off<K extends keyof SubscriptionEventMap>(event: K, listener: SubscriptionEventMap[K]): void;
  off(event: string, listener: (data: MessageData, info: ChannelMessageInfo) => void): void;
}
export interface RealtimeClient {
  /** Subscribes to `channel` (when connected, and again after every resume or reset); the same Subscription for a channel already subscribed. */
  subscribe(channel: string, options?: SubscribeOptions): Subscription;
  /** The live Subscription objects. */
  subscriptions(): Subscription[];
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof RealtimeEventMap>(event: K, listener: RealtimeEventMap[K]): () => void;
  /** Adds a listener for a named event; returns a function that removes it. */
  on(event: string, listener: NamedEventListener): () => void;
  /** Removes a listener added with `on()`. */
  off<K extends keyof RealtimeEventMap>(event: K, listener: RealtimeEventMap[K]): void;
  off(event: string, listener: NamedEventListener): void;
}
"#;
