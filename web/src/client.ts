/**
 * One room over one WebSocket: connect, join, decode frames, ping for round trips, and
 * come back after a lost connection with the resume token (docs/protocol.md sections 1, 2,
 * 5 and 6). Room kinds build on it (game.ts, ticker.ts, chat.ts).
 *
 * Events are typed callbacks (`on("welcome", ...)`); every received frame is counted so a
 * page can show snapshots/s and bytes/s.
 */

import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ClientMessageSchema,
  ErrorCode,
  ServerMessageSchema,
  type Error as ServerError,
  type ServerMessage,
  type Welcome,
} from "./gen/tickroom_pb.js";

/** Where a connection is. `reconnecting` waits for the next attempt after a loss. */
export type ConnState = "idle" | "connecting" | "joined" | "reconnecting" | "closed";

export type ClientBody = MessageInitShape<typeof ClientMessageSchema>["body"];

export interface ConnectionOptions {
  /** WebSocket URL, e.g. from `wsUrl(location)`. */
  url: string;
  room: string;
  /** `Join.protocol`: 2 for quantized game views; other room kinds ignore it. */
  protocol?: number;
  /** `Join.name`: chat rooms. */
  name?: string;
  /** Application `Ping` period (RTT); default 2000 ms. */
  pingIntervalMs?: number;
  /** With nothing received for this long, the connection is taken for dead and replaced;
   *  default 10 000 ms (pongs arrive every `pingIntervalMs`). */
  deadAfterMs?: number;
  /** Reconnect backoff: first delay and ceiling; default 250 ms and 5 s. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Redirects followed in a row (clustered servers, section 15); default 3. */
  maxRedirects?: number;
  /** The URL names a session prepared over REST (`/ws?session=ID`, section 12): the server
   *  joins it by itself, so no `Join` is sent. */
  prepared?: boolean;
}

interface Events {
  /** A `Join` was answered; `resumed` says whether the avatar came back. */
  welcome: (w: Welcome, tick: bigint) => void;
  /** Every decoded server message, after `welcome` handling. */
  message: (m: ServerMessage, bytes: number) => void;
  /** A refused message (section 8). */
  error: (e: ServerError, tick: bigint) => void;
  state: (s: ConnState, detail: string) => void;
  /** A round trip measured with `Ping`/`Pong`, in ms. */
  rtt: (ms: number) => void;
}

/** Counters for a stats overlay. */
export interface ConnStats {
  messages: number;
  bytes: number;
  snapshots: number;
  reconnects: number;
  /** Last close as seen by the browser: code and reason. */
  lastClose: string;
  rttMs: number | null;
  /** Estimated server clock minus local clock, µs (from Pong). */
  clockOffsetUs: number | null;
}

/** `ws:`/`wss:` URL of the server's `/ws` on the host a page was loaded from. */
export function wsUrl(loc: { protocol: string; host: string }, path = "/ws"): string {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}${path}`;
}

function nowUs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

export class Connection {
  readonly opts: Required<ConnectionOptions>;
  state: ConnState = "idle";
  welcome: Welcome | null = null;
  /** Resume token of the current room (game rooms); kept across reconnects. */
  resumeToken = "";
  readonly stats: ConnStats = {
    messages: 0,
    bytes: 0,
    snapshots: 0,
    reconnects: 0,
    lastClose: "",
    rttMs: null,
    clockOffsetUs: null,
  };
  /** Messages to send right after each Welcome (a ticker's Subscribe). */
  onJoined: Array<() => void> = [];

  private ws: WebSocket | null = null;
  private url: string;
  private listeners: { [K in keyof Events]: Events[K][] } = {
    welcome: [],
    message: [],
    error: [],
    state: [],
    rtt: [],
  };
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private backoff: number;
  private lastHeard = 0;
  private redirects = 0;

  constructor(opts: ConnectionOptions) {
    this.opts = {
      protocol: 0,
      name: "",
      pingIntervalMs: 2000,
      deadAfterMs: 10_000,
      backoffMs: 250,
      maxBackoffMs: 5000,
      maxRedirects: 3,
      prepared: false,
      ...opts,
    };
    this.url = this.opts.url;
    this.backoff = this.opts.backoffMs;
  }

  on<K extends keyof Events>(event: K, f: Events[K]): this {
    this.listeners[event].push(f);
    return this;
  }

  private emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    for (const f of this.listeners[event]) (f as (...a: Parameters<Events[K]>) => void)(...args);
  }

  private setState(s: ConnState, detail = ""): void {
    this.state = s;
    this.emit("state", s, detail);
  }

  /** Opens the socket and joins; after a loss it reconnects by itself until `close()`. */
  start(): void {
    if (this.state === "closed") return;
    this.open();
  }

  /** Leaves for good: sends `Leave` (the avatar is deleted at once) and closes. */
  close(): void {
    this.send({ case: "leave", value: {} });
    this.setState("closed");
    this.stopTimers();
    this.ws?.close(1000, "bye");
    this.ws = null;
  }

  /** Sends one message if the socket is open; returns whether it went out. */
  send(body: ClientBody): boolean {
    const ws = this.ws;
    if (ws === null || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(toBinary(ClientMessageSchema, create(ClientMessageSchema, { body })));
    return true;
  }

  /** Whether the room answered the last Join on the current socket. */
  joined(): boolean {
    return this.state === "joined";
  }

  private open(): void {
    this.setState(this.stats.reconnects > 0 ? "reconnecting" : "connecting", this.url);
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.lost(`cannot open ${this.url}: ${String(e)}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.lastHeard = performance.now();
      if (!this.opts.prepared) this.send({
        case: "join",
        value: {
          room: this.opts.room,
          resumeToken: this.resumeToken,
          name: this.opts.name,
          protocol: this.opts.protocol,
        },
      });
      this.ping();
      this.pingTimer = setInterval(() => this.heartbeat(), this.opts.pingIntervalMs);
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (this.ws !== ws) return;
      this.lastHeard = performance.now();
      if (!(ev.data instanceof ArrayBuffer)) return; // text frames are not part of the protocol
      this.receive(new Uint8Array(ev.data));
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.stats.lastClose = `${ev.code} ${ev.reason}`.trim();
      // 4002: another connection took this avatar over (another tab); 4003: a prepared
      // session that no longer exists. Coming back would only fight over it.
      if (ev.code === 4002 || ev.code === 4003) {
        this.stopTimers();
        this.ws = null;
        this.setState("closed", this.stats.lastClose);
        return;
      }
      this.lost(this.stats.lastClose);
    };
    // An error is always followed by close, which decides what to do.
    ws.onerror = () => {};
  }

  private receive(bytes: Uint8Array): void {
    let m: ServerMessage;
    try {
      m = fromBinary(ServerMessageSchema, bytes);
    } catch (e) {
      console.warn("tickroom: undecodable frame", e);
      return;
    }
    this.stats.messages++;
    this.stats.bytes += bytes.byteLength;
    switch (m.body.case) {
      case "welcome": {
        const w = m.body.value;
        this.welcome = w;
        if (w.resumeToken !== "") this.resumeToken = w.resumeToken;
        this.backoff = this.opts.backoffMs;
        this.redirects = 0;
        this.setState("joined", w.resumed ? "resumed" : "joined");
        this.emit("welcome", w, m.tick);
        for (const f of this.onJoined) f();
        break;
      }
      case "snapshot":
        this.stats.snapshots++;
        break;
      case "pong": {
        const p = m.body.value;
        const now = nowUs();
        const rtt = Number(now - p.clientTimeUs) / 1000;
        this.stats.rttMs = rtt;
        // The server read its clock about half a round trip after we sent.
        this.stats.clockOffsetUs = Number(p.serverTimeUs - (p.clientTimeUs + now) / 2n);
        this.emit("rtt", rtt);
        break;
      }
      case "error": {
        const e = m.body.value;
        if (e.code === ErrorCode.REDIRECT && e.redirectUrl !== "" && this.redirects < this.opts.maxRedirects) {
          // Clustered servers: the game room runs on another node; join there.
          this.redirects++;
          this.url = e.redirectUrl;
          this.replace(`redirected to ${e.redirectUrl}`);
          return;
        }
        this.emit("error", e, m.tick);
        if (this.state !== "joined" && !this.opts.prepared) {
          // The Join was refused (no such room, full, forbidden): the session is in no room.
          // Try again later, with backoff, as after a lost connection.
          this.emit("message", m, bytes.byteLength);
          const ws = this.ws;
          this.ws = null;
          ws?.close(1000, "join refused");
          this.lost(`join refused: ${e.message}`);
          return;
        }
        break;
      }
      default:
        break;
    }
    this.emit("message", m, bytes.byteLength);
  }

  private ping(): void {
    this.send({ case: "ping", value: { clientTimeUs: nowUs() } });
  }

  private heartbeat(): void {
    // Browsers answer the server's WebSocket pings themselves; the application ping measures
    // the round trip and, answered or not, tells a dead connection from a quiet room.
    if (performance.now() - this.lastHeard > this.opts.deadAfterMs) {
      this.replace("no answer from the server");
      return;
    }
    this.ping();
  }

  /** Drops the current socket at once and connects again (without waiting for backoff). */
  private replace(why: string): void {
    const old = this.ws;
    this.stopTimers();
    this.ws = null;
    old?.close(1000, why.slice(0, 100));
    this.stats.reconnects++;
    this.open();
  }

  private lost(why: string): void {
    this.stopTimers();
    this.ws = null;
    if (this.state === "closed") return;
    this.stats.reconnects++;
    this.setState("reconnecting", why);
    const delay = this.backoff * (0.75 + Math.random() * 0.5);
    this.backoff = Math.min(this.backoff * 2, this.opts.maxBackoffMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.open();
    }, delay);
  }

  private stopTimers(): void {
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.pingTimer = null;
    this.retryTimer = null;
  }
}
