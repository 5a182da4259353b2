// `npm test`: bundles test/unit.test.ts with esbuild (Node cannot run TypeScript itself) next
// to it, runs it with Node's test runner, and removes the bundle.
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
// Beside the source, so the test finds docs/protocol.md relative to itself.
const outfile = join(here, ".unit.test.mjs");
try {
  await esbuild.build({
    entryPoints: [join(here, "unit.test.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node18",
    outfile,
    logLevel: "warning",
  });
  const r = spawnSync(process.execPath, ["--test", outfile], { stdio: "inherit" });
  process.exitCode = r.status ?? 1;
} finally {
  rmSync(outfile, { force: true });
}
