// Unit tests of the library's pure parts, run by `npm test` (test/unit.mjs bundles this file
// for Node's test runner). The view example is read from docs/protocol.md itself, so the
// document and the reference client cannot drift apart.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fromBinary } from "@bufbuild/protobuf";
import { ServerMessageSchema } from "../src/gen/tickroom_pb.js";
import { checksum, ViewState, type Row } from "../src/view.js";
import { applyStep, normalize, Predictor, roundHalfAway, stepRules } from "../src/predict.js";

/** The hex bytes of the code block that follows the line starting with `title`. */
function docBytes(title: string): Uint8Array {
  const doc = readFileSync(new URL("../../docs/protocol.md", import.meta.url), "utf8");
  const at = doc.indexOf(title);
  assert.ok(at >= 0, `docs/protocol.md has "${title}"`);
  const block = doc.slice(at).split("```")[1]!;
  const bytes: number[] = [];
  for (const line of block.split("\n")) {
    const m = /^\s*((?:[0-9a-f]{2} )*[0-9a-f]{2})(?:\s{2,}|$)/.exec(line);
    if (m) for (const b of m[1]!.split(" ")) bytes.push(parseInt(b, 16));
  }
  return new Uint8Array(bytes);
}

function row(id: number, kind: number, x: number, y: number, seq: number, vx: number, vy: number, vseq: number): Row {
  return { id, kind, x, y, seq, vx, vy, vseq };
}

test("the worked example of docs/protocol.md 4.4 applies to the published states", () => {
  const s = new ViewState();
  const key = fromBinary(ServerMessageSchema, docBytes("Keyframe, tick 100"));
  assert.equal(key.tick, 100n);
  assert.equal(key.body.case, "snapshot");
  assert.equal(key.body.value.serverTimeUs, 1764590400000000n);
  const r1 = s.apply(key.tick, key.body.value.view!);
  assert.deepEqual(r1, { ok: true, keyframe: true });
  assert.deepEqual(s.rows(), [row(3, 2, 6400, 12800, 0, 107, 0, 0), row(7, 1, 32016, 640, 41, 0, -213, 1)]);
  assert.equal(checksum(s.rows()), 0xbcdf0d30);

  const delta = fromBinary(ServerMessageSchema, docBytes("Delta, tick 101"));
  assert.equal(delta.body.case, "snapshot");
  const dv = delta.body.value.view!;
  const r2 = s.apply(delta.tick, dv);
  assert.deepEqual(r2, { ok: true, keyframe: false });
  assert.deepEqual(s.rows(), [row(3, 2, 6507, 12800, 0, 107, 0, 0), row(7, 1, 32030, 430, 42, 14, -210, 1)]);
  assert.deepEqual(s.at(), { view: 5, tick: 101n });

  // The same delta again has the wrong base: ignored, state kept.
  const again = s.apply(102n, dv);
  assert.equal(again.ok, false);
  assert.equal(s.rows().length, 2);
});

test("a wrong checksum drops the state until the next keyframe", () => {
  const s = new ViewState();
  const key = fromBinary(ServerMessageSchema, docBytes("Keyframe, tick 100"));
  assert.equal(key.body.case, "snapshot");
  const bad = { ...key.body.value.view!, checksum: 1 };
  const r = s.apply(100n, bad);
  assert.equal(r.ok, false);
  assert.equal(s.at(), null);
  assert.equal(s.rows().length, 0);
});

test("the checksum of nothing is FNV-1a's offset basis and words hash as published", () => {
  assert.equal(checksum([]), 0x811c9dc5);
  let h = 0x811c9dc5;
  for (let i = 0; i < 8; i++) h = Math.imul(h, 0x01000193) >>> 0;
  assert.equal(checksum([row(0, 0, 0, 0, 0, 0, 0, 0)]), h);
});

test("one step is the server's quantized step", () => {
  const rules = stepRules(200, 60, 64, 1000, 1000);
  assert.equal(rules.step, Math.fround(12800 / 60));
  assert.equal(rules.maxX, 64000);
  // Straight: round(213.333) = 213 units of 1/64, the example's 213/64 per tick.
  assert.deepEqual(applyStep(rules, 32016, 640, 0, 1), [32016, 853]);
  // Diagonal: scaled to length 1 in 32-bit floats, then rounded half away from zero.
  const [dx, dy] = normalize(1, 1);
  assert.equal(dx, Math.fround(1 / Math.fround(Math.SQRT2)));
  const d = roundHalfAway(Math.fround(dx * rules.step));
  assert.deepEqual(applyStep(rules, 1000, 1000, -1, 1), [1000 - d, 1000 + d]);
  // Clamped at the edges; a partial step stays partial.
  assert.deepEqual(applyStep(rules, 100, 63_900, -1, 1), [0, 64000]);
  assert.deepEqual(applyStep(rules, 1000, 1000, 0.5, 0), [1000 + roundHalfAway(Math.fround(0.5 * rules.step)), 1000]);
  assert.equal(roundHalfAway(-2.5), -3);
  assert.equal(roundHalfAway(2.5), 3);
});

test("reconciliation drops acknowledged inputs and replays the rest", () => {
  const rules = stepRules(200, 60, 64, 1000, 1000);
  const p = new Predictor(rules);
  p.reconcile(32000, 32000, 0);
  p.input(1, 1, 0);
  p.input(2, 1, 0);
  p.input(3, 0, 1);
  assert.deepEqual([p.x, p.y, p.pendingCount()], [32426, 32213, 3]);
  // The server applied 1 and 2 as predicted.
  p.reconcile(32426, 32000, 2);
  assert.deepEqual([p.x, p.y, p.pendingCount(), p.confirmed, p.mispredictions], [32426, 32213, 1, 1, 0]);
  // It put the avatar elsewhere for 3 (say a refused input before): corrected.
  p.reconcile(100, 100, 3);
  assert.deepEqual([p.x, p.y, p.pendingCount(), p.mispredictions], [100, 100, 0, 1]);
});
