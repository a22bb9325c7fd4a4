// Builds the page into ../src/bangor/web/static (shipped inside the Python package, so
// `pip install` needs no Node). `--check` rebuilds into memory and fails if the committed
// bundle differs: CI proves the shipped files come from these sources.
import { build } from "esbuild";
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "bangor", "web", "static");
const check = process.argv.includes("--check");

const entries = [{ in: "src/main.ts", out: "app.js" }].filter((e) => existsSync(join(here, e.in)));
const files = new Map();
if (entries.length) {
  const result = await build({
    absWorkingDir: here,
    entryPoints: entries.map((e) => ({ in: join(here, e.in), out: e.out.replace(/\.js$/, "") })),
    bundle: true,
    format: "esm",
    target: "chrome120",
    minify: true,
    legalComments: "eof",
    write: false,
    outdir: out,
  });
  for (const f of result.outputFiles) files.set(f.path, Buffer.from(f.contents));
}
for (const name of ["index.html", "style.css"]) {
  const src = join(here, "public", name);
  if (existsSync(src)) files.set(join(out, name), readFileSync(src));
}
let stale = [];
for (const [path, data] of files) {
  if (check) {
    if (!existsSync(path) || !readFileSync(path).equals(data)) stale.push(path);
  } else {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, data);
  }
}
if (stale.length) {
  console.error(`the committed bundle is stale; run \`npm run build\` in web/:\n  ${stale.join("\n  ")}`);
  process.exit(1);
}
for (const [path, data] of files) console.log(`${check ? "ok" : "wrote"} ${path} ${data.length} bytes`);
