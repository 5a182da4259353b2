/**
 * A ticker room client (docs/protocol.md sections 11 and 12): subscribe to symbols over the
 * WebSocket, or prepare the stream over REST first (`POST /api/v1/sessions`); keep each
 * symbol's newest quote with when it arrived. Subscriptions are sent again after every
 * reconnect, since a new connection is a new session.
 */

import { Connection, wsUrl, type ConnectionOptions } from "./client.js";
import { ErrorCode, type Quote } from "./gen/tickroom_pb.js";

/** A symbol's newest value and a little history. */
export interface BoardValue {
  symbol: string;
  last: number;
  bid: number;
  ask: number;
  volume: number;
  dayChange: number;
  dayChangePct: number;
  seq: number;
  exchangeTimeUs: number;
  /** `performance.now()` when it arrived. */
  receivedAt: number;
  /** +1 up, -1 down, 0 same, relative to the previous value of `last`. */
  direction: number;
  /** The last values by seq, newest last (for comparing with the REST API). */
  history: Array<{ seq: number; last: number; bid: number; ask: number }>;
}

const HISTORY = 64;

export interface TickerOptions extends Omit<ConnectionOptions, "protocol" | "prepared"> {
  symbols: string[];
  /** Prepare the stream with `POST /api/v1/sessions` (the REST two-step flow) against this
   *  HTTP origin, e.g. `location.origin`, instead of `Subscribe`. */
  restOrigin?: string;
}

export class TickerClient {
  conn: Connection;
  /** What the server says the session receives (the last `Subscriptions`). */
  subscribed: string[] = [];
  readonly values = new Map<string, BoardValue>();
  /** Quotes received in all. */
  updates = 0;
  lastError = "";
  private wanted: string[];
  private listeners: Array<(v: BoardValue) => void> = [];

  constructor(private opts: TickerOptions) {
    this.wanted = [...opts.symbols];
    this.conn = this.connection(opts.url, false);
  }

  private connection(url: string, prepared: boolean): Connection {
    const conn = new Connection({ ...this.opts, url, prepared });
    conn.onJoined.push(() => {
      // A prepared session knows its symbols; anything added later is subscribed again.
      if (this.wanted.length > 0) conn.send({ case: "subscribe", value: { symbols: this.wanted } });
    });
    conn.on("message", (m) => {
      switch (m.body.case) {
        case "subscriptions":
          this.subscribed = m.body.value.symbols;
          break;
        case "snapshot":
          // A tick's quotes arrive as one message holding several (section 11).
          for (const o of m.body.value.objects) if (o.state.case === "quote") this.quote(o.state.value);
          break;
        default:
          break;
      }
    });
    conn.on("error", (e) => {
      this.lastError = e.message;
      if (e.code === ErrorCode.UNKNOWN_SYMBOL) {
        // All-or-nothing: keep asking only for what the server accepted.
        this.wanted = [...this.subscribed];
      }
    });
    return conn;
  }

  /** Connects; with `restOrigin` prepares the session over REST first. */
  async start(): Promise<void> {
    if (this.opts.restOrigin === undefined) {
      this.conn.start();
      return;
    }
    const origin = this.opts.restOrigin;
    const res = await fetch(`${origin}/api/v1/sessions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ symbols: this.wanted, room: this.opts.room }),
    });
    const body = (await res.json()) as { session_id?: string; error?: string };
    if (!res.ok || body.session_id === undefined) {
      throw new Error(`POST /api/v1/sessions: ${res.status} ${body.error ?? ""}`);
    }
    // The answer's ws_url carries the Host we sent; build ours from the page's own origin so
    // a TLS-terminating proxy keeps wss:.
    const url = wsUrl(new URL(origin), `/ws?session=${encodeURIComponent(body.session_id)}`);
    this.conn = this.connection(url, true);
    this.conn.on("state", (s, detail) => {
      // The prepared session expired while we were away (4003): prepare another.
      if (s === "closed" && detail.startsWith("4003")) void this.start();
    });
    this.conn.start();
  }

  onUpdate(f: (v: BoardValue) => void): void {
    this.listeners.push(f);
  }

  subscribe(symbols: string[]): void {
    for (const s of symbols) if (!this.wanted.includes(s)) this.wanted.push(s);
    this.conn.send({ case: "subscribe", value: { symbols } });
  }

  unsubscribe(symbols: string[]): void {
    this.wanted = this.wanted.filter((s) => !symbols.includes(s));
    for (const s of symbols) this.values.delete(s);
    if (symbols.length > 0) this.conn.send({ case: "unsubscribe", value: { symbols } });
  }

  private quote(q: Quote): void {
    this.updates++;
    const prev = this.values.get(q.symbol);
    const seq = Number(q.seq);
    if (prev !== undefined && seq <= prev.seq) return; // only grows per symbol
    const history = prev?.history ?? [];
    history.push({ seq, last: q.last, bid: q.bid, ask: q.ask });
    if (history.length > HISTORY) history.shift();
    const v: BoardValue = {
      symbol: q.symbol,
      last: q.last,
      bid: q.bid,
      ask: q.ask,
      volume: Number(q.volume),
      dayChange: q.dayChange,
      dayChangePct: q.dayChangePct,
      seq,
      exchangeTimeUs: Number(q.exchangeTimeUs),
      receivedAt: performance.now(),
      direction: prev === undefined ? 0 : Math.sign(q.last - prev.last),
      history,
    };
    this.values.set(q.symbol, v);
    for (const f of this.listeners) f(v);
  }
}
