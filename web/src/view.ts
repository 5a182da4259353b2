/**
 * A game view's state as a protocol 2 client holds it, and the one way to advance it:
 * apply a `View` (a keyframe or a delta) in the order docs/protocol.md section 4.4 gives,
 * then check the result against the message's checksum.
 *
 * This is the JavaScript twin of `proto/src/view.rs` (`ViewState::apply`): plain 32-bit
 * integer arithmetic, so both reach the same state bit for bit.
 */

import type { View } from "./gen/tickroom_pb.js";

/** One object of a view in wire units: positions in 1/position_scale world units,
 *  velocities per snapshot of the view. */
export interface Row {
  id: number;
  /** `EntityKind` as its number (1 avatar, 2 bot). */
  kind: number;
  x: number;
  y: number;
  seq: number;
  vx: number;
  vy: number;
  vseq: number;
}

/** Why a view was not applied. After `missed-base` the state is unchanged; after the
 *  others it is cleared and the client waits for a keyframe. */
export type ApplyError =
  | { kind: "missed-base"; view: number; baseTick: bigint }
  | { kind: "malformed"; why: string }
  | { kind: "checksum"; expected: number; got: number };

export type ApplyResult = { ok: true; keyframe: boolean } | { ok: false; error: ApplyError };

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a 32 taken a 32-bit word at a time (`h = (h ^ word) * prime`) over each row in id
 *  order: id, kind, x, y, seq, vx, vy, vseq (the signed ones in two's complement). */
export function checksum(rows: readonly Row[]): number {
  let h = FNV_OFFSET;
  for (const r of rows) {
    h = Math.imul(h ^ r.id, FNV_PRIME);
    h = Math.imul(h ^ r.kind, FNV_PRIME);
    h = Math.imul(h ^ r.x, FNV_PRIME);
    h = Math.imul(h ^ r.y, FNV_PRIME);
    h = Math.imul(h ^ r.seq, FNV_PRIME);
    h = Math.imul(h ^ r.vx, FNV_PRIME);
    h = Math.imul(h ^ r.vy, FNV_PRIME);
    h = Math.imul(h ^ r.vseq, FNV_PRIME);
  }
  return h >>> 0;
}

/** Protobuf's sint32 zig-zag, undone: 0, 1, 2, 3 -> 0, -1, 1, -2. */
export function unzigzag(z: number): number {
  return (z >>> 1) ^ -(z & 1);
}

/** In a `moved` head: residuals of x and y follow. */
const HAS_XY = 1;
/** In a `moved` head: a residual of seq follows. */
const HAS_SEQ = 2;
/** Values per object in `added`. */
const ADDED_VALUES = 8;

class Malformed {
  constructor(readonly why: string) {}
}

/** The state of one view as a client reconstructs it. */
export class ViewState {
  /** Sorted by id. */
  private rowsById: Row[] = [];
  /** The view and tick of the last snapshot applied; null before the first keyframe. */
  private heldAt: { view: number; tick: bigint } | null = null;

  rows(): readonly Row[] {
    return this.rowsById;
  }

  get(id: number): Row | undefined {
    let lo = 0;
    let hi = this.rowsById.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const r = this.rowsById[mid]!;
      if (r.id === id) return r;
      if (r.id < id) lo = mid + 1;
      else hi = mid;
    }
    return undefined;
  }

  at(): { view: number; tick: bigint } | null {
    return this.heldAt;
  }

  clear(): void {
    this.rowsById = [];
    this.heldAt = null;
  }

  /** Applies the view of the snapshot of `tick`: removals, then prediction and residuals,
   *  then additions; then checks the checksum. */
  apply(tick: bigint, v: View): ApplyResult {
    const keyframe = v.baseTick === 0n;
    const held = this.heldAt;
    if (!keyframe && (held === null || held.view !== v.view || held.tick !== v.baseTick)) {
      return { ok: false, error: { kind: "missed-base", view: v.view, baseTick: v.baseTick } };
    }
    try {
      this.applyColumns(keyframe, v);
    } catch (e) {
      if (!(e instanceof Malformed)) throw e;
      this.clear();
      return { ok: false, error: { kind: "malformed", why: e.why } };
    }
    const got = checksum(this.rowsById);
    if (got !== v.checksum >>> 0) {
      this.clear();
      return { ok: false, error: { kind: "checksum", expected: v.checksum >>> 0, got } };
    }
    this.heldAt = { view: v.view, tick };
    return { ok: true, keyframe };
  }

  private applyColumns(keyframe: boolean, v: View): void {
    let rows = keyframe ? [] : this.rowsById;
    // 1. Removals, by position in the base state (each entry skips that many objects).
    if (v.removed.length > 0) {
      const gone = new Array<boolean>(rows.length).fill(false);
      let at = 0;
      for (const skip of v.removed) {
        at += skip;
        if (at >= rows.length) throw new Malformed("removes past the state");
        gone[at] = true;
        at += 1;
      }
      rows = rows.filter((_, i) => !gone[i]);
    }
    // 2. Prediction for every object, then the residuals of those that did not follow it.
    //    Unsigned fields wrap modulo 2^32 (`>>> 0`), velocities as int32 (`| 0`).
    rows = rows.map((r) => ({
      ...r,
      x: (r.x + r.vx) >>> 0,
      y: (r.y + r.vy) >>> 0,
      seq: (r.seq + r.vseq) >>> 0,
    }));
    const moved = v.moved;
    let at = 0;
    for (let i = 0; i < moved.length; ) {
      const head = moved[i++]! >>> 0;
      at += head >>> 2;
      const next = (): number => {
        if (i >= moved.length) throw new Malformed("moved ends inside an entry");
        return unzigzag(moved[i++]!);
      };
      const [rx, ry] = head & HAS_XY ? [next(), next()] : [0, 0];
      const rs = head & HAS_SEQ ? next() : 0;
      const r = rows[at];
      if (r === undefined) throw new Malformed("moves past the state");
      r.x = (r.x + rx) >>> 0;
      r.y = (r.y + ry) >>> 0;
      r.seq = (r.seq + rs) >>> 0;
      r.vx = (r.vx + rx) | 0;
      r.vy = (r.vy + ry) | 0;
      r.vseq = (r.vseq + rs) | 0;
      at += 1;
    }
    // 3. Additions: 8 values each, ids gap-coded.
    const added = v.added;
    if (added.length % ADDED_VALUES !== 0) throw new Malformed("added ends inside an entry");
    if (added.length > 0) {
      let prev = -1;
      for (let i = 0; i < added.length; i += ADDED_VALUES) {
        const gap = added[i]! >>> 0;
        if (prev >= 0 && gap === 0) throw new Malformed("ids must ascend");
        const id = prev < 0 ? gap : prev + gap;
        if (id > 0xffffffff) throw new Malformed("id overflows");
        prev = id;
        rows.push({
          id,
          kind: added[i + 1]!,
          x: added[i + 2]! >>> 0,
          y: added[i + 3]! >>> 0,
          seq: added[i + 4]! >>> 0,
          vx: unzigzag(added[i + 5]!),
          vy: unzigzag(added[i + 6]!),
          vseq: unzigzag(added[i + 7]!),
        });
      }
      rows.sort((a, b) => a.id - b.id);
      for (let i = 1; i < rows.length; i++) {
        if (rows[i - 1]!.id === rows[i]!.id) throw new Malformed("adds an id the view already holds");
      }
    }
    this.rowsById = rows;
  }
}
