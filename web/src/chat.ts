/**
 * A chat room client (docs/protocol.md section 14): join with a name to send, receive each
 * tick's batch; texts arrive as the server filtered them (masked words are `*`).
 */

import { Connection, type ConnectionOptions } from "./client.js";
import { ChatKind, ErrorCode } from "./gen/tickroom_pb.js";

export interface ChatLine {
  /** Room-wide number (0 for lines this client made up, such as refusals). */
  id: number;
  kind: "user" | "notice" | "gift" | "system";
  from: string;
  text: string;
  gift: string;
  giftCount: number;
  /** Whether this session sent it (matched by `client_msg_id`). */
  mine: boolean;
  serverTimeUs: number;
}

const KEEP = 200;

export class ChatClient {
  readonly conn: Connection;
  readonly lines: ChatLine[] = [];
  /** Viewer messages the room dropped at its per-tick cap. */
  dropped = 0;
  private nextMsgId = 1;
  private sentIds = new Set<number>();
  private listeners: Array<(l: ChatLine) => void> = [];

  constructor(opts: Omit<ConnectionOptions, "protocol" | "prepared">) {
    this.conn = new Connection(opts);
    this.conn.on("message", (m) => {
      if (m.body.case !== "chatBatch") return;
      const b = m.body.value;
      this.dropped += b.dropped;
      for (const c of b.messages) {
        const clientId = Number(c.clientMsgId);
        const mine = c.kind === ChatKind.USER && c.from === this.conn.opts.name && this.sentIds.delete(clientId);
        this.add({
          id: Number(c.id),
          kind: c.kind === ChatKind.NOTICE ? "notice" : c.kind === ChatKind.GIFT ? "gift" : "user",
          from: c.from,
          text: c.text,
          gift: c.gift,
          giftCount: c.giftCount,
          mine,
          serverTimeUs: Number(c.serverTimeUs),
        });
      }
    });
    this.conn.on("error", (e) => {
      const why =
        e.code === ErrorCode.RATE_LIMITED ? "slow down: " : e.code === ErrorCode.NAME_REQUIRED ? "join with a name to send: " : "";
      this.add({ id: 0, kind: "system", from: "", text: `${why}${e.message}`, gift: "", giftCount: 0, mine: false, serverTimeUs: 0 });
    });
  }

  start(): void {
    this.conn.start();
  }

  /** Leaves the room and closes for good. */
  stop(): void {
    this.conn.close();
  }

  onLine(f: (l: ChatLine) => void): void {
    this.listeners.push(f);
  }

  /** Sends a message; false when not connected. */
  send(text: string): boolean {
    const id = this.nextMsgId++;
    const sentTimeUs = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
    if (!this.conn.send({ case: "chatSend", value: { text, clientMsgId: BigInt(id), sentTimeUs } })) return false;
    this.sentIds.add(id);
    return true;
  }

  private add(l: ChatLine): void {
    this.lines.push(l);
    if (this.lines.length > KEEP) this.lines.shift();
    for (const f of this.listeners) f(l);
  }
}
