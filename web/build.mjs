// Builds the page the server embeds: generates src/gen/ from proto/tickroom.proto (buf +
// protoc-gen-es), type-checks src/ (tsc), bundles src/app.ts with esbuild into dist/app.js and
// copies index.html and app.css beside it. Deterministic: the same sources give the same
// bytes, so tests/web_build.rs can tell a stale committed build.
//
//   node build.mjs                      regenerate src/gen and rebuild dist/ in place
//   node build.mjs --outdir DIR         write the bundle to DIR instead of dist/
//   node build.mjs --gen-output DIR     write generated code under DIR (DIR/src/gen) instead
//   node build.mjs --generate-only      only the code generation
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync } from "node:fs";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
process.chdir(here);

const args = process.argv.slice(2);
function option(name, fallback) {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const value = args[i + 1];
  if (value === undefined) throw new Error(`${name} needs a value`);
  return resolve(process.env.INIT_CWD ?? process.cwd(), value);
}
const outdir = option("--outdir", join(here, "dist"));
const genOutput = option("--gen-output", null);
const generateOnly = args.includes("--generate-only");

// As under `npm run`: the local tools first on PATH (buf looks protoc-gen-es up there).
const bin = join(here, "node_modules", ".bin");
const env = { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` };

function run(cmd, cmdArgs) {
  const r = spawnSync(join(bin, cmd), cmdArgs, { stdio: "inherit", env });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    console.error(`${cmd} ${cmdArgs.join(" ")} failed (${r.status})`);
    process.exit(r.status ?? 1);
  }
}

// 1. Code from the schema: the same generator and runtime versions as package-lock.json.
run("buf", ["generate", ...(genOutput === null ? [] : ["--output", genOutput])]);
if (generateOnly) process.exit(0);

// 2. Types: esbuild strips them without checking.
run("tsc", ["--noEmit", "-p", "."]);

// 3. The bundle and the static files.
mkdirSync(outdir, { recursive: true });
await esbuild.build({
  entryPoints: ["src/app.ts"],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  charset: "utf8",
  outfile: join(outdir, "app.js"),
  logLevel: "warning",
});
for (const f of ["index.html", "app.css"]) copyFileSync(join("src", f), join(outdir, f));
console.log(`built ${outdir}`);
