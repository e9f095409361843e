// Builds the page into dist/ (committed, embedded in the server binary): one script bundle, one
// stylesheet, one HTML shell. Prints the bundle's size beside its goal.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const GOAL_GZIPPED_KB = 250;

mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile: "dist/app.js",
  // The output is committed: no comments with dates or paths, nothing that varies by machine.
  legalComments: "none",
  logLevel: "warning",
});
copyFileSync("src/index.html", "dist/index.html");
copyFileSync("src/app.css", "dist/app.css");

for (const file of ["app.js", "app.css", "index.html"]) {
  const bytes = readFileSync(`dist/${file}`);
  const gzipped = gzipSync(bytes, { level: 9 }).length;
  console.log(`${file}: ${(bytes.length / 1024).toFixed(1)} KB, ${(gzipped / 1024).toFixed(1)} KB gzipped`);
}
const total = ["app.js", "app.css", "index.html"]
  .map((file) => gzipSync(readFileSync(`dist/${file}`), { level: 9 }).length)
  .reduce((a, b) => a + b, 0);
console.log(`page weight: ${(total / 1024).toFixed(1)} KB gzipped (goal: at most ${GOAL_GZIPPED_KB} KB)`);
