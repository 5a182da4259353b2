// Drives one headless Chromium page for tests/browser.rs: JSON commands on stdin, one per line,
// each answered by one JSON line on stdout ({"id", "ok", "value"} or {"id", "ok": false,
// "error"}). The first line out is {"ready": true, "version": ...} once the browser runs.
//
// The browser is the system's (Debian's `chromium`; TICKROOM_CHROMIUM overrides the path),
// driven over the DevTools protocol by playwright-core, which downloads nothing.
//
// Commands: goto {url} | eval {expr} | wait {expr, timeoutMs} | keydown {key} | keyup {key} |
// fill {selector, text} | press {selector, key} | focus {selector} |
// screenshot {selector?, path?} (value: base64 PNG) | errors (console errors so far) | close
import { createInterface } from "node:readline";
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const executablePath = process.env.TICKROOM_CHROMIUM || "/usr/bin/chromium";
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// Flags for a closed network and a root user (Chromium's sandbox needs an unprivileged one).
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // Keep timers and frames at full rate although no one looks at the window.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
const page = await context.newPage();
const errors = [];
page.on("console", (m) => {
  if (m.type() === "error") errors.push(`console: ${m.text()} (${m.location().url}:${m.location().lineNumber})`);
});
page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
page.on("crash", () => errors.push("page crashed"));

out({ ready: true, version: browser.version() });

async function handle(c) {
  switch (c.cmd) {
    case "goto": {
      const r = await page.goto(c.url, { waitUntil: "load" });
      return r === null ? null : r.status();
    }
    case "eval":
      return await page.evaluate(c.expr);
    case "wait": {
      // Polled with evaluate (the DevTools protocol) rather than waitForFunction, which
      // compiles the expression inside the page, where the page's CSP forbids eval.
      const end = Date.now() + (c.timeoutMs ?? 10000);
      for (;;) {
        const v = await page.evaluate(c.expr);
        if (v) return v;
        if (Date.now() > end) throw new Error(`timed out after ${c.timeoutMs ?? 10000} ms waiting for ${c.expr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    case "keydown":
      return await page.keyboard.down(c.key);
    case "keyup":
      return await page.keyboard.up(c.key);
    case "fill":
      return await page.fill(c.selector, c.text);
    case "press":
      return await page.press(c.selector, c.key);
    case "focus":
      return await page.focus(c.selector);
    case "screenshot": {
      const target = c.selector ? page.locator(c.selector) : page;
      const png = await target.screenshot({ animations: "allow" });
      if (c.path) writeFileSync(c.path, png);
      return png.toString("base64");
    }
    case "errors":
      return errors;
    case "close":
      await browser.close();
      return null;
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === "") continue;
  let c;
  try {
    c = JSON.parse(line);
  } catch (e) {
    out({ id: null, ok: false, error: `bad JSON: ${e}` });
    continue;
  }
  try {
    const value = await handle(c);
    out({ id: c.id, ok: true, value: value ?? null });
  } catch (e) {
    out({ id: c.id, ok: false, error: String(e?.stack ?? e) });
  }
  if (c.cmd === "close") break;
}
await browser.close().catch(() => {});
process.exit(0);
