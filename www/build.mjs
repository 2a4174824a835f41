// Builds the static site into www/dist: the pages and scripts of www/src, the wasm-bindgen output
// (`--pkg DIR`), and the zoo's models with an index.json per model set that lists every file with its
// size and SHA-256 (the worker verifies each download against it). `{{sha256:PATH}}` in a page becomes
// the digest of dist/PATH. Writes dist/build-report.json with the wasm's raw and gzipped sizes.
// Usage: node www/build.mjs --pkg DIR [--out www/dist]
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import zlib from "node:zlib";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  if (i + 1 >= args.length) throw new Error(`${name} needs a value`);
  return args[i + 1];
};
const pkg = arg("--pkg");
if (!pkg) throw new Error("usage: node www/build.mjs --pkg DIR [--out DIR]");
const out = path.resolve(arg("--out", path.join(here, "dist")));
const family = path.join(root, "crates/zoo/family");

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

// Written under a temporary name and renamed: a failed build never leaves a half-built site.
const tmp = `${out}.tmp-${process.pid}`;
fs.rmSync(tmp, { recursive: true, force: true });
try {
  fs.cpSync(path.join(here, "src"), tmp, { recursive: true });
  for (const f of ["chorus_web.js", "chorus_web_bg.wasm", "chorus_web.d.ts", "chorus_web_bg.wasm.d.ts"]) {
    const p = path.join(pkg, f);
    if (!fs.existsSync(p)) throw new Error(`${p} is missing: run wasm-bindgen --target web first (scripts/build-web does)`);
  }
  fs.cpSync(pkg, path.join(tmp, "pkg"), { recursive: true });

  // Copies a file of the source tree into the site and describes it for an index.
  const put = (src, rel, base) => {
    const bytes = fs.readFileSync(src);
    const dest = path.join(base, rel);
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.writeFileSync(dest, bytes);
    return { url: rel, sha256: sha256(bytes), bytes: bytes.length };
  };

  // The zoo family: the bases and one small expert per task (what fused decoding needs).
  const manifest = JSON.parse(fs.readFileSync(path.join(family, "family.json"), "utf8"));
  const zoo = path.join(tmp, "models/zoo");
  const tokenizer = put(path.join(family, "small-base/tokenizer.json"), "tokenizer.json", zoo);
  const member = (name) => ({
    name,
    config: put(path.join(family, name, "config.json"), `${name}/config.json`, zoo),
    tokenizer,
    weights: [put(path.join(family, name, "model.safetensors"), `${name}/model.safetensors`, zoo)],
  });
  const keyword = { add: "add", reverse: "rev", sort: "sort", recall: "get", date: "date" };
  const examples = { add: "add 12 34 =", reverse: "rev plant =", sort: "sort 5 2 9 1 =", recall: "get b in a=4 b=7 c=1 =", date: "date 2024-03-07 =" };
  const tasks = manifest.spec.tasks;
  const index = {
    format: "chorus-site-family/1",
    name: "zoo",
    tasks,
    keywords: Object.fromEntries(tasks.map((t) => [t, keyword[t]])),
    examples: Object.fromEntries(tasks.filter((t) => examples[t]).map((t) => [t, examples[t]])),
    large: member("large-base"),
    base: member("small-base"),
    experts: Object.fromEntries(tasks.map((t) => [t, member(`small-${t}`)])),
  };
  fs.writeFileSync(path.join(zoo, "index.json"), JSON.stringify(index, null, 1));

  // The demo twin pack (crates/zoo/family/twin, rebuilt by `chorus zoo twin-pack`).
  const pack = path.join(family, "twin");
  const tw = path.join(tmp, "models/zoo-twin");
  const factors = fs.readdirSync(path.join(pack, "twin")).filter((f) => f.endsWith(".safetensors")).sort();
  const twin = {
    format: "chorus-site-twin/1",
    name: "zoo-twin",
    twin: put(path.join(pack, "twin.json"), "twin.json", tw),
    router: put(path.join(pack, "router.json"), "router.json", tw),
    routerWeights: put(path.join(pack, "router.safetensors"), "router.safetensors", tw),
    factors: factors.map((f) => put(path.join(pack, "twin", f), `twin/${f}`, tw)),
    shared: {
      name: "zoo-twin/shared",
      config: put(path.join(pack, "shared/config.json"), "shared/config.json", tw),
      tokenizer: put(path.join(pack, "shared/tokenizer.json"), "shared/tokenizer.json", tw),
      weights: [put(path.join(pack, "shared/model.safetensors"), "shared/model.safetensors", tw)],
    },
  };
  fs.writeFileSync(path.join(tw, "index.json"), JSON.stringify(twin, null, 1));

  // Digests named in pages.
  for (const page of fs.readdirSync(tmp).filter((f) => f.endsWith(".html"))) {
    const p = path.join(tmp, page);
    const text = fs.readFileSync(p, "utf8").replace(/\{\{sha256:([^}]+)\}\}/g, (_, rel) => {
      const f = path.join(tmp, rel);
      if (!fs.existsSync(f)) throw new Error(`${page}: {{sha256:${rel}}} names a file the site does not have`);
      return sha256(fs.readFileSync(f));
    });
    fs.writeFileSync(p, text);
  }

  const wasm = fs.readFileSync(path.join(tmp, "pkg/chorus_web_bg.wasm"));
  const report = {
    wasm_bytes: wasm.length,
    wasm_gzip_bytes: zlib.gzipSync(wasm, { level: 9 }).length,
    js_bytes: fs.statSync(path.join(tmp, "pkg/chorus_web.js")).size,
    model_bytes: [...Object.values(index.experts), index.large, index.base].reduce((a, m) => a + m.config.bytes + m.weights[0].bytes, tokenizer.bytes),
    twin_bytes: [twin.twin, twin.router, twin.routerWeights, ...twin.factors, twin.shared.config, twin.shared.tokenizer, ...twin.shared.weights].reduce((a, f) => a + f.bytes, 0),
  };
  fs.writeFileSync(path.join(tmp, "build-report.json"), JSON.stringify(report, null, 1));
  fs.rmSync(out, { recursive: true, force: true });
  fs.renameSync(tmp, out);
  console.log(`site → ${out}: wasm ${(report.wasm_bytes / 1e6).toFixed(2)} MB (${(report.wasm_gzip_bytes / 1e6).toFixed(2)} MB gzipped), ` +
    `zoo models ${(report.model_bytes / 1e6).toFixed(2)} MB, twin pack ${(report.twin_bytes / 1e6).toFixed(2)} MB`);
} catch (e) {
  fs.rmSync(tmp, { recursive: true, force: true });
  console.error(`build-web: ${e.message}`);
  process.exit(1);
}
