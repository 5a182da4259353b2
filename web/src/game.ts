/**
 * A game room client: the view (protocol 2 keyframes and deltas, or protocol 1 full
 * snapshots), the own avatar predicted from the inputs sent and reconciled against
 * `last_input_seq`, and the two latest snapshots for interpolating everyone else
 * (docs/protocol.md section 4).
 */

import { Connection, type ConnectionOptions } from "./client.js";
import { EntityKind, type Snapshot, type Welcome } from "./gen/tickroom_pb.js";
import { Predictor, stepRules, type StepRules } from "./predict.js";
import { ViewState, type ApplyError, type Row } from "./view.js";

/** An object of a snapshot in world units. */
export interface Thing {
  id: number;
  kind: EntityKind;
  x: number;
  y: number;
}

/** One applied snapshot, as the renderer needs it. */
export interface Frame {
  tick: bigint;
  /** `performance.now()` when it arrived. */
  at: number;
  things: Map<number, Thing>;
}

export interface ViewStats {
  keyframes: number;
  deltas: number;
  /** Deltas whose base this client did not hold (ignored until the next keyframe). */
  missedBase: number;
  /** Checksum mismatches and malformed views (state dropped until the next keyframe). */
  failed: number;
  lastError: string;
  /** The last delta ignored for a missing base, and what was held instead. */
  lastMissed: string;
}

/** The own avatar as the server last confirmed it, in wire units (1/position_scale). */
export interface Confirmed {
  x: number;
  y: number;
  seq: number;
  tick: bigint;
}

/** Protocol 2 unless told otherwise. */
export const PROTOCOL = 2;

export class GameClient {
  readonly conn: Connection;
  readonly view = new ViewState();
  readonly viewStats: ViewStats = { keyframes: 0, deltas: 0, missedBase: 0, failed: 0, lastError: "", lastMissed: "" };
  /** Snapshots carried as protocol 1 `objects` (a server that does not speak version 2). */
  objectSnapshots = 0;
  /** The newest two frames, oldest first. */
  frames: Frame[] = [];
  /** Highest input seq sent: kept across reconnects, since a resumed avatar keeps its
   *  counter (section 4.2). */
  seq = 0;
  myId = 0;
  scale = 64;
  tickRateHz = 60;
  worldW = 1000;
  worldH = 1000;
  predictor: Predictor | null = null;
  confirmed: Confirmed | null = null;
  /** Objects announced by ObjectCreated lately (for a spawn effect): id → performance.now(). */
  readonly spawned = new Map<number, number>();

  private dir: [number, number] = [0, 0];
  private nextInputAt = 0;
  private pump: ReturnType<typeof setInterval> | null = null;

  constructor(opts: Omit<ConnectionOptions, "protocol"> & { protocol?: number }) {
    this.conn = new Connection({ protocol: PROTOCOL, ...opts });
    this.conn.on("welcome", (w) => this.welcomed(w));
    this.conn.on("state", (s) => {
      if (s !== "joined") {
        // Until the next Welcome nothing is known: the first snapshot after it is a keyframe,
        // and inputs still unacknowledged may have died with the socket.
        this.view.clear();
        this.predictor?.reset();
      }
    });
    this.conn.on("message", (m) => {
      switch (m.body.case) {
        case "snapshot":
          this.snapshot(m.tick, m.body.value);
          break;
        case "objectCreated":
          for (const o of m.body.value.objects) this.spawned.set(o.id, performance.now());
          break;
        default:
          break;
      }
    });
  }

  start(): void {
    this.conn.start();
    // Inputs leave at the room's rate by the clock, not by frames drawn: a busy page that
    // draws slowly still moves at full speed, and a fast one never outruns the room.
    this.pump = setInterval(() => this.sendDue(performance.now()), 4);
  }

  stop(): void {
    if (this.pump !== null) clearInterval(this.pump);
    this.conn.close();
  }

  /** The direction the player holds, each component in [-1, 1]; (0, 0) stops. */
  setDirection(dx: number, dy: number): void {
    const wasIdle = this.dir[0] === 0 && this.dir[1] === 0;
    this.dir = [dx, dy];
    if (wasIdle && (dx !== 0 || dy !== 0)) {
      this.nextInputAt = performance.now();
      this.sendDue(this.nextInputAt);
    }
  }

  private rules(): StepRules {
    return stepRules(this.welcomeOr().speed, this.tickRateHz, this.scale, this.worldW, this.worldH);
  }

  private welcomeOr(): Welcome | { speed: number } {
    return this.conn.welcome ?? { speed: 200 };
  }

  private welcomed(w: Welcome): void {
    this.myId = w.yourObjectId;
    this.scale = w.positionScale || 64;
    this.tickRateHz = w.tickRateHz || 60;
    this.worldW = w.worldWidth;
    this.worldH = w.worldHeight;
    this.predictor = new Predictor(this.rules());
    this.confirmed = null;
    this.frames = [];
  }

  /** Sends the inputs due by `now`: one per tick period while a direction is held. */
  private sendDue(now: number): void {
    const [dx, dy] = this.dir;
    if (dx === 0 && dy === 0) return;
    if (!this.conn.joined() || this.predictor === null || this.predictor.x === null) return;
    const period = 1000 / this.tickRateHz;
    // After a stall send at most two at once; the room would queue the rest anyway.
    if (now - this.nextInputAt > 2 * period) this.nextInputAt = now - period;
    while (now >= this.nextInputAt) {
      const seq = this.seq + 1;
      if (!this.conn.send({ case: "input", value: { seq, moveX: dx, moveY: dy } })) return;
      this.seq = seq;
      this.predictor.input(seq, dx, dy);
      this.nextInputAt += period;
    }
  }

  private snapshot(tick: bigint, s: Snapshot): void {
    let rows: readonly Row[];
    if (s.view !== undefined) {
      const r = this.view.apply(tick, s.view);
      if (!r.ok) {
        this.noteError(r.error);
        return;
      }
      if (r.keyframe) this.viewStats.keyframes++;
      else this.viewStats.deltas++;
      rows = this.view.rows();
    } else {
      // Protocol 1: every object of the view as floats on the 1/scale grid.
      this.objectSnapshots++;
      const list: Row[] = [];
      for (const o of s.objects) {
        if (o.state.case !== "entity") continue;
        const e = o.state.value;
        list.push({
          id: o.id,
          kind: e.kind,
          x: Math.round(e.x * this.scale),
          y: Math.round(e.y * this.scale),
          seq: e.lastInputSeq,
          vx: 0,
          vy: 0,
          vseq: 0,
        });
      }
      rows = list;
    }
    const things = new Map<number, Thing>();
    for (const r of rows) {
      things.set(r.id, { id: r.id, kind: r.kind, x: r.x / this.scale, y: r.y / this.scale });
      if (r.id === this.myId) {
        this.confirmed = { x: r.x, y: r.y, seq: r.seq, tick };
        this.predictor?.reconcile(r.x, r.y, r.seq);
      }
    }
    this.frames.push({ tick, at: performance.now(), things });
    if (this.frames.length > 2) this.frames.shift();
  }

  private noteError(e: ApplyError): void {
    if (e.kind === "missed-base") {
      this.viewStats.missedBase++;
      const held = this.view.at();
      this.viewStats.lastMissed = `delta of view ${e.view} on tick ${e.baseTick}, held ${held === null ? "nothing" : `view ${held.view} at tick ${held.tick}`}`;
      return;
    }
    this.viewStats.failed++;
    this.viewStats.lastError = e.kind === "checksum" ? `checksum ${e.got} != ${e.expected}` : e.why;
    console.warn(`tickroom: view dropped (${this.viewStats.lastError}); waiting for a keyframe`);
  }

  /** Everyone but the own avatar, interpolated between the two latest frames by how far
   *  `now` is into the next tick: drawn one tick behind, smoothly. */
  others(now: number): Thing[] {
    const latest = this.frames[this.frames.length - 1];
    if (latest === undefined) return [];
    const prev = this.frames.length > 1 ? this.frames[0]! : latest;
    const period = 1000 / this.tickRateHz;
    const alpha = Math.min(1, Math.max(0, (now - latest.at) / period));
    const out: Thing[] = [];
    for (const t of latest.things.values()) {
      if (t.id === this.myId) continue;
      const p = prev.things.get(t.id);
      if (p === undefined) {
        out.push(t);
        continue;
      }
      out.push({ ...t, x: p.x + (t.x - p.x) * alpha, y: p.y + (t.y - p.y) * alpha });
    }
    return out;
  }

  /** The own avatar where prediction puts it, in world units. */
  me(): { x: number; y: number } | null {
    const p = this.predictor;
    if (p === null || p.x === null || p.y === null) return null;
    return { x: p.x / this.scale, y: p.y / this.scale };
  }
}
