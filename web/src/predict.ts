/**
 * Client-side prediction of the player's own avatar (docs/protocol.md sections 4.1 and 4.3).
 *
 * The server moves an avatar one quantized step per input, computed in 32-bit floats and
 * rounded half away from zero; `Math.fround` after every float operation reproduces it bit
 * for bit, so a prediction is either exact or the server did something else (a refused
 * input, a resume) and reconciliation corrects it.
 */

const f = Math.fround;

/** Rounds half away from zero, as the server does (`Math.round` rounds halves up). */
export function roundHalfAway(v: number): number {
  return Math.sign(v) * Math.round(Math.abs(v));
}

/** What one input does, from the room's `Welcome`. */
export interface StepRules {
  /** `(speed · position_scale) / tick_rate_hz` in 32-bit floats: units of 1/scale per input. */
  step: number;
  /** World bounds in units of 1/scale. */
  maxX: number;
  maxY: number;
}

export function stepRules(speed: number, tickRateHz: number, scale: number, worldW: number, worldH: number): StepRules {
  return {
    step: f(f(speed * scale) / tickRateHz),
    maxX: Math.round(f(worldW * scale)),
    maxY: Math.round(f(worldH * scale)),
  };
}

/** The direction as the server keeps it: finite, scaled to length 1 when longer. */
export function normalize(dx: number, dy: number): [number, number] {
  let x = f(dx);
  let y = f(dy);
  const len = f(Math.sqrt(f(f(x * x) + f(y * y))));
  if (len > 1) {
    x = f(x / len);
    y = f(y / len);
  }
  return [x, y];
}

function clamp(v: number, max: number): number {
  return v < 0 ? 0 : v > max ? max : v;
}

/** One input applied to a quantized position. */
export function applyStep(rules: StepRules, x: number, y: number, dx: number, dy: number): [number, number] {
  const [nx, ny] = normalize(dx, dy);
  return [
    clamp(x + roundHalfAway(f(nx * rules.step)), rules.maxX),
    clamp(y + roundHalfAway(f(ny * rules.step)), rules.maxY),
  ];
}

/** An input sent and not yet acknowledged, with where it was predicted to put the avatar. */
export interface PendingInput {
  seq: number;
  dx: number;
  dy: number;
  x: number;
  y: number;
}

/**
 * The own avatar's predicted position: inputs are applied at once on top of the last
 * position the server confirmed; a snapshot acknowledges some (`last_input_seq`), and the
 * rest are replayed on the server's position.
 */
export class Predictor {
  private pending: PendingInput[] = [];
  /** Quantized predicted position; null until the first snapshot with the avatar. */
  x: number | null = null;
  y: number | null = null;
  /** Acknowledged inputs whose predicted result differed from the server's. */
  mispredictions = 0;
  /** Acknowledged inputs whose prediction matched. */
  confirmed = 0;

  constructor(private rules: StepRules) {}

  pendingCount(): number {
    return this.pending.length;
  }

  /** Records input `seq` and moves the prediction by it. */
  input(seq: number, dx: number, dy: number): void {
    if (this.x === null || this.y === null) return;
    const [x, y] = applyStep(this.rules, this.x, this.y, dx, dy);
    this.x = x;
    this.y = y;
    this.pending.push({ seq, dx, dy, x, y });
  }

  /** The server's state of the avatar in a snapshot: drop what it acknowledged, restart
   *  from its position and replay the rest. */
  reconcile(serverX: number, serverY: number, lastInputSeq: number): void {
    let i = 0;
    while (i < this.pending.length && this.pending[i]!.seq <= lastInputSeq) {
      const p = this.pending[i]!;
      if (p.seq === lastInputSeq) {
        if (p.x === serverX && p.y === serverY) this.confirmed++;
        else this.mispredictions++;
      }
      i++;
    }
    this.pending.splice(0, i);
    let x = serverX;
    let y = serverY;
    for (const p of this.pending) {
      [x, y] = applyStep(this.rules, x, y, p.dx, p.dy);
      p.x = x;
      p.y = y;
    }
    this.x = x;
    this.y = y;
  }

  /** Forgets unacknowledged inputs (after a reconnect they may have died with the socket). */
  reset(): void {
    this.pending = [];
    this.x = null;
    this.y = null;
  }
}
