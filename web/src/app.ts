/**
 * The page served at `/`: the arena on a canvas, a ticker board and a chat panel, each on
 * its own WebSocket to the server that served the page, with a stats overlay.
 *
 * Query parameters (all optional): `arena`, `ticker`, `chat` (room names; defaults are the
 * demo's), `name` (chat name), `symbols` (comma-separated), `board=rest` (prepare the board
 * over REST instead of Subscribe).
 *
 * `window.tickroom` exposes the clients and a JSON `state()` for tests and curious people.
 */

import { wsUrl, type Connection } from "./client.js";
import { ChatClient, type ChatLine } from "./chat.js";
import { GameClient } from "./game.js";
import { EntityKind } from "./gen/tickroom_pb.js";
import { TickerClient, type BoardValue } from "./ticker.js";

const params = new URLSearchParams(location.search);
const rooms = {
  arena: params.get("arena") ?? "arena",
  ticker: params.get("ticker") ?? "ticker",
  chat: params.get("chat") ?? "chat",
};
const url = wsUrl(location);

function $<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} missing from the page`);
  return el as T;
}

// ------------------------------------------------------------------ arena

const game = new GameClient({ url, room: rooms.arena });
const canvas = $<HTMLCanvasElement>("arena");
const ctx = canvas.getContext("2d", { alpha: false })!;
$("arena-room").textContent = rooms.arena;

const held = new Set<string>();
const KEYS: Record<string, [number, number]> = {
  KeyW: [0, -1],
  ArrowUp: [0, -1],
  KeyS: [0, 1],
  ArrowDown: [0, 1],
  KeyA: [-1, 0],
  ArrowLeft: [-1, 0],
  KeyD: [1, 0],
  ArrowRight: [1, 0],
};

function steer(): void {
  let dx = 0;
  let dy = 0;
  for (const k of held) {
    const d = KEYS[k]!;
    dx += d[0];
    dy += d[1];
  }
  // The server scales a diagonal to length 1 itself; clamp only the sums of opposite keys.
  game.setDirection(Math.max(-1, Math.min(1, dx)), Math.max(-1, Math.min(1, dy)));
}

function typing(e: KeyboardEvent): boolean {
  const t = e.target as HTMLElement | null;
  return t !== null && (t.tagName === "INPUT" || t.tagName === "TEXTAREA");
}

addEventListener("keydown", (e) => {
  if (typing(e) || !(e.code in KEYS)) return;
  e.preventDefault();
  held.add(e.code);
  steer();
});
addEventListener("keyup", (e) => {
  if (!held.delete(e.code)) return;
  steer();
});
addEventListener("blur", () => {
  held.clear();
  steer();
});

function hue(id: number): number {
  return (id * 137.508) % 360;
}

function draw(now: number): void {
  const dpr = devicePixelRatio || 1;
  const size = Math.round(canvas.clientWidth * dpr) || canvas.width;
  if (canvas.width !== size) {
    canvas.width = size;
    canvas.height = size;
  }
  const s = size / Math.max(game.worldW, game.worldH, 1);
  ctx.fillStyle = "#0b0e12";
  ctx.fillRect(0, 0, size, size);
  // A grid every 100 world units, for a sense of motion and place.
  ctx.strokeStyle = "#1a2029";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let g = 100; g < game.worldW; g += 100) {
    ctx.moveTo(Math.round(g * s) + 0.5, 0);
    ctx.lineTo(Math.round(g * s) + 0.5, size);
  }
  for (let g = 100; g < game.worldH; g += 100) {
    ctx.moveTo(0, Math.round(g * s) + 0.5);
    ctx.lineTo(size, Math.round(g * s) + 0.5);
  }
  ctx.stroke();

  for (const t of game.others(now)) {
    const bot = t.kind === EntityKind.BOT;
    ctx.fillStyle = bot ? "#7d8794" : `hsl(${hue(t.id)} 80% 60%)`;
    ctx.beginPath();
    ctx.arc(t.x * s, t.y * s, (bot ? 4 : 6) * dpr, 0, Math.PI * 2);
    ctx.fill();
  }
  for (const [id, at] of game.spawned) {
    const age = (now - at) / 600;
    const t = game.frames[game.frames.length - 1]?.things.get(id);
    if (age > 1 || t === undefined) {
      if (age > 1) game.spawned.delete(id);
      continue;
    }
    ctx.strokeStyle = `rgba(255, 255, 255, ${1 - age})`;
    ctx.beginPath();
    ctx.arc(t.x * s, t.y * s, (6 + 20 * age) * dpr, 0, Math.PI * 2);
    ctx.stroke();
  }
  const c = game.confirmed;
  if (c !== null) {
    // Where the server last had us: a faint ghost that the prediction runs ahead of.
    ctx.strokeStyle = "rgba(245, 197, 66, 0.45)";
    ctx.beginPath();
    ctx.arc((c.x / game.scale) * s, (c.y / game.scale) * s, 7 * dpr, 0, Math.PI * 2);
    ctx.stroke();
  }
  const me = game.me();
  if (me !== null) {
    ctx.fillStyle = "#f5c542";
    ctx.beginPath();
    ctx.arc(me.x * s, me.y * s, 7 * dpr, 0, Math.PI * 2);
    ctx.fill();
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = 2 * dpr;
    ctx.beginPath();
    ctx.arc(me.x * s, me.y * s, 11 * dpr, 0, Math.PI * 2);
    ctx.stroke();
  }
}

// ------------------------------------------------------------------ board

const DEFAULT_SYMBOLS = ["SYM001", "SYM002", "SYM003", "SYM004", "SYM005", "SYM006", "SYM007", "SYM008"];
const symbols = (params.get("symbols") ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
const ticker = new TickerClient({
  url,
  room: rooms.ticker,
  symbols: symbols.length > 0 ? symbols : DEFAULT_SYMBOLS,
  ...(params.get("board") === "rest" ? { restOrigin: location.origin } : {}),
});
$("board-room").textContent = rooms.ticker + (params.get("board") === "rest" ? " (prepared over REST)" : "");
const boardBody = $<HTMLTableElement>("board").tBodies[0]!;
const rows = new Map<string, HTMLTableRowElement>();
/** A value older than this (or any value while disconnected) is marked stale. */
const STALE_MS = 3000;

function boardRow(symbol: string): HTMLTableRowElement {
  let tr = rows.get(symbol);
  if (tr !== undefined) return tr;
  tr = document.createElement("tr");
  tr.dataset["symbol"] = symbol;
  for (const cls of ["sym", "last", "bid", "ask", "chg", "seq", "age", "rm"]) {
    const td = document.createElement("td");
    td.className = cls;
    tr.appendChild(td);
  }
  tr.cells[0]!.textContent = symbol;
  const rm = document.createElement("button");
  rm.className = "remove";
  rm.textContent = "×";
  rm.title = `unsubscribe ${symbol}`;
  rm.onclick = () => {
    ticker.unsubscribe([symbol]);
    rows.get(symbol)?.remove();
    rows.delete(symbol);
  };
  tr.cells[7]!.appendChild(rm);
  // Keep the board sorted by symbol.
  const after = [...rows.keys()].filter((s) => s > symbol).sort()[0];
  boardBody.insertBefore(tr, after === undefined ? null : rows.get(after)!);
  rows.set(symbol, tr);
  return tr;
}

function price(v: number): string {
  return v.toFixed(2);
}

function showValue(v: BoardValue): void {
  const tr = boardRow(v.symbol);
  const [, last, bid, ask, chg, seq] = [...tr.cells];
  last!.textContent = price(v.last);
  bid!.textContent = price(v.bid);
  ask!.textContent = price(v.ask);
  chg!.textContent = `${v.dayChangePct >= 0 ? "+" : ""}${v.dayChangePct.toFixed(2)}`;
  chg!.className = `chg ${v.dayChangePct >= 0 ? "pos" : "neg"}`;
  seq!.textContent = String(v.seq);
  if (v.direction !== 0) {
    // Restart the flash animation: drop the class, force a style flush, add it again.
    last!.className = "last";
    void last!.offsetWidth;
    last!.className = `last ${v.direction > 0 ? "flash-up" : "flash-down"}`;
  }
}

/** Age of each value on the server's clock (estimated from Pong), and the stale mark. */
function ageBoard(): void {
  const offsetUs = ticker.conn.stats.clockOffsetUs ?? 0;
  const serverNowUs = (performance.timeOrigin + performance.now()) * 1000 + offsetUs;
  const live = ticker.conn.joined();
  for (const [symbol, tr] of rows) {
    const v = ticker.values.get(symbol);
    const age = tr.cells[6]!;
    if (v === undefined) {
      age.textContent = "–";
      tr.classList.toggle("stale", !live);
      continue;
    }
    const ms = v.exchangeTimeUs > 0 ? Math.max(0, (serverNowUs - v.exchangeTimeUs) / 1000) : performance.now() - v.receivedAt;
    age.textContent = ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
    tr.classList.toggle("stale", !live || performance.now() - v.receivedAt > STALE_MS);
  }
}

ticker.onUpdate(showValue);
for (const s of symbols.length > 0 ? symbols : DEFAULT_SYMBOLS) boardRow(s);
$<HTMLFormElement>("board-add").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $<HTMLInputElement>("board-symbol");
  const list = input.value.split(/[\s,]+/).map((s) => s.trim().toUpperCase()).filter((s) => s !== "");
  if (list.length === 0) return;
  ticker.lastError = "";
  ticker.subscribe(list);
  input.value = "";
});

// ------------------------------------------------------------------ chat

const chatLines = $<HTMLOListElement>("chat-lines");
const nameInput = $<HTMLInputElement>("chat-name");
const textInput = $<HTMLInputElement>("chat-text");
nameInput.value = params.get("name") ?? localStorage.getItem("tickroom.name") ?? `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
$("chat-room").textContent = rooms.chat;

function chatClient(name: string): ChatClient {
  const c = new ChatClient({ url, room: rooms.chat, name });
  c.onLine(showLine);
  c.start();
  return c;
}

function showLine(l: ChatLine): void {
  const li = document.createElement("li");
  li.className = l.kind + (l.mine ? " mine" : "");
  if (l.kind === "gift") {
    li.textContent = `${l.from} sent ${l.giftCount} × ${l.gift}`;
  } else {
    if (l.from !== "") {
      const from = document.createElement("span");
      from.className = "from";
      from.textContent = l.from;
      li.appendChild(from);
    }
    // Text as the server sent it: masked words are already '*'.
    li.appendChild(document.createTextNode(l.text));
  }
  const stick = chatLines.scrollTop + chatLines.clientHeight >= chatLines.scrollHeight - 4;
  chatLines.appendChild(li);
  while (chatLines.children.length > 200) chatLines.firstElementChild!.remove();
  if (stick) chatLines.scrollTop = chatLines.scrollHeight;
}

let chat = chatClient(nameInput.value.trim());
nameInput.addEventListener("change", () => {
  const name = nameInput.value.trim();
  if (name === "" || name === chat.conn.opts.name) return;
  localStorage.setItem("tickroom.name", name);
  // The name is part of the Join: join again under the new one.
  chat.stop();
  chat = chatClient(name);
});
$<HTMLFormElement>("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = textInput.value;
  if (text.trim() === "") return;
  if (chat.send(text)) textInput.value = "";
});

// ------------------------------------------------------------------ stats and loop

/** Figures of the last whole second. */
const rates = { fps: 0, snapshotsPerSec: 0, bytesPerSec: 0, messagesPerSec: 0 };
let frames = 0;
/** Frames drawn since the page loaded. */
let framesTotal = 0;
let lastSample = performance.now();
let lastTotals = { snapshots: 0, bytes: 0, messages: 0 };
const conns = (): Connection[] => [game.conn, ticker.conn, chat.conn];

function sample(now: number): void {
  const secs = (now - lastSample) / 1000;
  if (secs < 1) return;
  // Snapshots are the arena's; bytes and messages count every socket of the page.
  const totals = {
    snapshots: game.conn.stats.snapshots,
    bytes: conns().reduce((a, c) => a + c.stats.bytes, 0),
    messages: conns().reduce((a, c) => a + c.stats.messages, 0),
  };
  rates.fps = frames / secs;
  rates.snapshotsPerSec = Math.max(0, totals.snapshots - lastTotals.snapshots) / secs;
  rates.bytesPerSec = Math.max(0, totals.bytes - lastTotals.bytes) / secs;
  rates.messagesPerSec = Math.max(0, totals.messages - lastTotals.messages) / secs;
  frames = 0;
  lastSample = now;
  lastTotals = totals;
  ageBoard();
  const err = $("board-error");
  err.textContent = ticker.lastError;
}

function kb(n: number): string {
  return n < 1024 ? `${Math.round(n)} B` : `${(n / 1024).toFixed(1)} KB`;
}

function overlay(): void {
  const g = game.conn;
  const tick = game.frames[game.frames.length - 1]?.tick ?? 0n;
  const rtt = g.stats.rttMs === null ? "–" : `${g.stats.rttMs.toFixed(1)} ms`;
  const proto = game.viewStats.keyframes + game.viewStats.deltas > 0 ? "v2 views" : game.objectSnapshots > 0 ? "v1 objects" : "–";
  const recon = conns()
    .map((c) => `${c.opts.room}:${c.state}${c.stats.reconnects > 0 ? `(${c.stats.reconnects})` : ""}`)
    .join(" ");
  $("stats").textContent =
    `tick ${tick}  ${proto}  you #${game.myId || "–"}\n` +
    `${rates.fps.toFixed(0)} fps  ${rates.snapshotsPerSec.toFixed(0)} snapshots/s  ${kb(rates.bytesPerSec)}/s\n` +
    `ping ${rtt}  ${recon}`;
}

function loop(now: number): void {
  frames++;
  framesTotal++;
  sample(now);
  draw(now);
  overlay();
  requestAnimationFrame(loop);
}

/** Everything a test (or a curious person at the console) may want, as plain JSON. */
function state(): unknown {
  const p = game.predictor;
  const c = game.confirmed;
  const latest = game.frames[game.frames.length - 1];
  const board: Record<string, { last: number; bid: number; ask: number; seq: number; stale: boolean; history: BoardValue["history"] }> = {};
  for (const [s, v] of ticker.values) {
    board[s] = {
      last: v.last,
      bid: v.bid,
      ask: v.ask,
      seq: v.seq,
      stale: rows.get(s)?.classList.contains("stale") ?? false,
      history: v.history,
    };
  }
  const conn = (x: Connection) => ({
    state: x.state,
    reconnects: x.stats.reconnects,
    lastClose: x.stats.lastClose,
    resumed: x.welcome?.resumed ?? false,
    sessionId: Number(x.welcome?.sessionId ?? 0n),
  });
  return {
    rates: { ...rates, rttMs: game.conn.stats.rttMs },
    // Counters since load, for rates over any window: (b - a) / (b.at - a.at).
    totals: {
      at: performance.now(),
      frames: framesTotal,
      snapshots: game.conn.stats.snapshots,
      bytes: conns().reduce((a, c) => a + c.stats.bytes, 0),
      arenaBytes: game.conn.stats.bytes,
      messages: conns().reduce((a, c) => a + c.stats.messages, 0),
    },
    arena: {
      ...conn(game.conn),
      id: game.myId,
      scale: game.scale,
      tick: Number(latest?.tick ?? 0n),
      objects: latest?.things.size ?? 0,
      bots: [...(latest?.things.values() ?? [])].filter((t) => t.kind === EntityKind.BOT).length,
      server: c === null ? null : { x: c.x, y: c.y, seq: c.seq, tick: Number(c.tick) },
      predicted: p === null || p.x === null ? null : { x: p.x, y: p.y },
      pending: p?.pendingCount() ?? 0,
      mispredictions: p?.mispredictions ?? 0,
      confirmedPredictions: p?.confirmed ?? 0,
      seq: game.seq,
      view: { ...game.viewStats, objectSnapshots: game.objectSnapshots },
    },
    board: { ...conn(ticker.conn), subscribed: ticker.subscribed, values: board, error: ticker.lastError },
    chat: {
      ...conn(chat.conn),
      name: chat.conn.opts.name,
      lines: chat.lines.map((l) => ({ id: l.id, kind: l.kind, from: l.from, text: l.text, mine: l.mine, gift: l.gift, giftCount: l.giftCount })),
    },
  };
}

declare global {
  interface Window {
    tickroom: unknown;
  }
}
window.tickroom = {
  game,
  ticker,
  get chat(): ChatClient {
    return chat;
  },
  state,
};

game.start();
void ticker.start().catch((e: unknown) => {
  ticker.lastError = String(e);
});
setInterval(() => sample(performance.now()), 1000);
requestAnimationFrame(loop);
