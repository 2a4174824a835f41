// End-to-end test of the site in Debian's Chromium (headless, WebGPU on SwiftShader), driven by
// playwright-core: serves www/dist on 127.0.0.1 under the strict CSP, runs the DLF playground, the
// documentation page's <chorus-fusion> widgets (WebGPU and CPU) and the Twin-Merging page, and checks
// that the browser's greedy fused tokens, one by one, and its α trace equal native `chorus fuse` on the
// same zoo models and prompt (and the twin page's text and router weights equal `chorus twin generate`).
// Also: a wrong sha256 attribute is refused, no CSP violation or page error happens, the page's main
// thread stays responsive while the worker decodes. Saves screenshots and a report (wasm size, time to
// first token, tokens/s) in target/e2e/. Not timed assertions: the timings are reported only.
// Usage: node www/tests/e2e.mjs   (after scripts/build-web; CHORUS_BIN: the native binary, default
// target/debug/chorus; CHROMIUM: the browser, default /usr/bin/chromium)
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../serve.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const dist = path.join(root, "www/dist");
const artifacts = path.join(root, "target/e2e");
const bin = process.env.CHORUS_BIN ?? path.join(root, "target/debug/chorus");
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const TIMEOUT = 300_000; // SwiftShader compiles every WebGPU pipeline on the CPU
fs.mkdirSync(artifacts, { recursive: true });

let failures = 0;
function check(cond, what) {
  console.log(`${cond ? "ok  " : "FAIL"} ${what}`);
  if (!cond) failures++;
}

for (const [p, why] of [[path.join(dist, "index.html"), "build the site first: scripts/build-web --dev"], [bin, "build the native CLI: cargo build -p chorus-cli"], [browserPath, "install chromium"]]) {
  if (!fs.existsSync(p)) {
    console.error(`e2e: ${p} is missing (${why})`);
    process.exit(1);
  }
}

// Native references.
// Memoised: the same prompt is compared against more than one browser run.
const nativeRuns = new Map();
function nativeFuse(prompt, max) {
  const key = `${prompt}\u0000${max}`;
  if (!nativeRuns.has(key)) nativeRuns.set(key, runNativeFuse(prompt, max));
  return nativeRuns.get(key);
}
function runNativeFuse(prompt, max) {
  const trace = path.join(artifacts, `native-${prompt.replace(/\W+/g, "_")}.jsonl`);
  const json = execFileSync(bin, ["fuse", "--prompt", prompt, "--max-new-tokens", String(max), "--json", "--trace", trace, "--force"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const out = JSON.parse(json.trim().split("\n").pop());
  out.trace = fs.readFileSync(trace, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  return out;
}
function nativeTwin(prompt, max) {
  const json = execFileSync(bin, ["twin", "generate", "--pack", path.join(root, "crates/zoo/family/twin"), "--prompt", prompt, "--max-new-tokens", String(max), "--json"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  return JSON.parse(json.trim().split("\n").pop()).rows[0];
}

// The browser's tokens and α per step equal the native ones (α from the same grid: equal to 1e-6).
function compareFuse(what, web, native) {
  check(JSON.stringify(web.tokens) === JSON.stringify(native.tokens), `${what}: tokens ${JSON.stringify(web.tokens)} = native ${JSON.stringify(native.tokens)}`);
  check(web.text === native.text, `${what}: text ${JSON.stringify(web.text)} = native ${JSON.stringify(native.text)}`);
  check(JSON.stringify(web.experts) === JSON.stringify(native.experts), `${what}: experts ${web.experts} = native ${native.experts}`);
  const wa = web.steps.map((s) => s.alpha);
  const same = wa.length === native.alphas.length && wa.every((a, i) => a.length === native.alphas[i].length && a.every((x, t) => Math.abs(x - native.alphas[i][t]) <= 1e-6));
  check(same, `${what}: α trace ${JSON.stringify(wa)} = native ${JSON.stringify(native.alphas)}`);
  const lossOk = web.steps.every((s, i) => {
    const n = native.trace[i]?.loss;
    return (s.loss == null && n == null) || Math.abs(s.loss - n) <= 1e-3 * Math.max(1, Math.abs(n));
  });
  check(lossOk, `${what}: per-step loss within 1e-3 (relative) of native`);
}

const site = await serve(dist);
const browser = await chromium.launch({
  executablePath: browserPath,
  headless: true,
  args: ["--no-sandbox", "--enable-unsafe-webgpu", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const report = { build: JSON.parse(fs.readFileSync(path.join(dist, "build-report.json"), "utf8")), runs: {} };
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const problems = [];
  context.on("page", (page) => {
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error" || /Content.Security.Policy|Refused to/i.test(m.text())) problems.push(`console ${m.type()}: ${m.text()}`);
    });
  });
  const page = await context.newPage();

  // 1. The DLF playground on WebGPU.
  const PROMPT = "add 12 34 =", MAX = 24;
  const native = nativeFuse(PROMPT, MAX);
  const t0 = Date.now();
  await page.goto(`${site.url}index.html?prompt=${encodeURIComponent(PROMPT)}&experts=add&max=${MAX}&backend=webgpu&run=1`);
  // While the worker loads and decodes, the page's own thread keeps answering (nothing heavy on it).
  const lag = await page.evaluate(async () => {
    let worst = 0, last = performance.now();
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 25));
      const now = performance.now();
      worst = Math.max(worst, now - last - 25);
      last = now;
    }
    return worst;
  });
  await page.waitForSelector("#output[data-state=done], #output[data-state=error]", { timeout: TIMEOUT });
  const play = await page.evaluate(() => ({ result: document.getElementById("output").chorusResult, spans: document.querySelectorAll("#output .tok").length, status: document.getElementById("status").textContent, points: document.querySelectorAll("#chart circle").length }));
  check(play.result != null, `playground finished (${play.status})`);
  if (play.result) {
    check(play.result.backend === "wgpu", `playground ran on WebGPU (backend ${play.result.backend})`);
    compareFuse("playground (WebGPU)", play.result, native);
    // One span and one α point per step (the end-of-answer step has its α too, but no output token).
    check(play.spans === play.result.steps.length, `playground streamed one coloured span per step (${play.spans})`);
    check(play.points === play.result.steps.length * play.result.experts.length, `α chart has a point per step and expert (${play.points})`);
    report.runs.playground_webgpu = { wall_ms: Date.now() - t0, first_token_ms: play.result.firstTokenMs, tokens_per_s: play.result.decode_tokens_per_s, tokens: play.result.tokens.length };
  }
  report.runs.main_thread_worst_lag_ms = lag;
  await page.screenshot({ path: path.join(artifacts, "playground.png"), fullPage: true });

  // 2. The documentation page: one widget on WebGPU (with the sha256 attribute), one switched to the CPU.
  await page.goto(`${site.url}docs-example.html`);
  const widget = async (id, backend) => {
    const t = Date.now();
    await page.evaluate(([id, backend]) => {
      const el = document.getElementById(id);
      if (backend) el.setAttribute("backend", backend);
      el.run();
    }, [id, backend]);
    await page.waitForFunction((id) => ["done", "error"].includes(document.getElementById(id).getAttribute("state")), id, { timeout: TIMEOUT });
    return { wall: Date.now() - t, ...(await page.evaluate((id) => {
      const el = document.getElementById(id);
      return { state: el.getAttribute("state"), result: el.result ?? null, status: el.shadowRoot.querySelector(".status").textContent, spans: el.shadowRoot.querySelectorAll(".out .tok").length };
    }, id)) };
  };
  const add = await widget("add-demo", "webgpu");
  check(add.state === "done", `widget add-demo finished (${add.status})`);
  if (add.result) {
    compareFuse("widget add-demo (sha256-checked, WebGPU)", add.result, native);
    check(add.spans === add.result.steps.length, `widget streamed every step (${add.spans})`);
    check(add.result.backend === "wgpu", `add-demo ran on WebGPU (${add.result.backend})`);
    report.runs.widget_webgpu = { wall_ms: add.wall, first_token_ms: add.result.firstTokenMs, tokens_per_s: add.result.decode_tokens_per_s };
  }
  const revNative = nativeFuse("rev plant =", 16);
  // "auto": a software adapter (SwiftShader here) is passed over for the CPU backend.
  const rev = await widget("rev-demo");
  check(rev.state === "done", `widget rev-demo on the CPU finished (${rev.status})`);
  if (rev.result) {
    check(rev.result.backend === "cpu", `rev-demo (backend auto, software adapter) ran on the CPU (${rev.result.backend})`);
    compareFuse("widget rev-demo (CPU)", rev.result, revNative);
    report.runs.widget_cpu = { wall_ms: rev.wall, first_token_ms: rev.result.firstTokenMs, tokens_per_s: rev.result.decode_tokens_per_s, load_included: true };
  }
  await page.screenshot({ path: path.join(artifacts, "docs-widget.png"), fullPage: true });
  // A widget whose sha256 does not match its index refuses to run.
  const bad = await page.evaluate(async () => {
    const el = document.createElement("chorus-fusion");
    el.id = "bad";
    el.setAttribute("src", "models/zoo/index.json");
    el.setAttribute("prompt", "add 1 2 =");
    el.setAttribute("sha256", "0".repeat(64));
    document.querySelector("article").append(el);
    await el.run();
    return { state: el.getAttribute("state"), status: el.shadowRoot.querySelector(".status").textContent };
  });
  check(bad.state === "error" && /sha256 mismatch/.test(bad.status), `a wrong sha256 is refused (${bad.status})`);

  // The model files went through Cache Storage (a second visit reads them locally).
  const cached = await page.evaluate(async () => (await (await caches.open("chorus-models-v1")).keys()).map((r) => new URL(r.url).pathname));
  const index = JSON.parse(fs.readFileSync(path.join(dist, "models/zoo/index.json"), "utf8"));
  const want = new Set([index.large, index.base, ...Object.values(index.experts)].flatMap((m) => [m.config.url, m.tokenizer.url, ...m.weights.map((w) => w.url)]));
  check([...want].every((u) => cached.includes(`/models/zoo/${u}`)), `every zoo file is in Cache Storage (${cached.length} entries)`);
  // The generated TypeScript definitions carry the API and its option types.
  const dts = fs.readFileSync(path.join(dist, "pkg/chorus_web.d.ts"), "utf8");
  check(["export class ChorusFusion", "export class ChorusTwin", "export function loadModel", "export interface FuseOptions", "export interface FuseStep"].every((s) => dts.includes(s)), "chorus_web.d.ts declares the API and its option types");

  // 3. The Twin-Merging page.
  const TWIN = "rev plant =";
  const twinNative = nativeTwin(TWIN, 16);
  await page.goto(`${site.url}twin.html?prompt=${encodeURIComponent(TWIN)}&max=16&backend=webgpu&run=1`);
  await page.waitForSelector("#output[data-state=done], #output[data-state=error]", { timeout: TIMEOUT });
  const twin = await page.evaluate(() => ({
    result: document.getElementById("output").chorusResult,
    status: document.getElementById("status").textContent,
    bars: document.querySelectorAll("#bars rect.bar").length,
    streamed: [...document.querySelectorAll("#output .tok")].map((s) => s.textContent).join(""),
  }));
  check(twin.result != null, `twin page finished (${twin.status})`);
  if (twin.result) {
    check(twin.result.output.text === twinNative.output, `twin text ${JSON.stringify(twin.result.output.text)} = native ${JSON.stringify(twinNative.output)}`);
    const wOk = twin.result.tasks.every((t, i) => Math.abs(twin.result.weights[i] - twinNative.weights[t]) <= 1e-4);
    check(wOk, `router weights ${JSON.stringify(twin.result.weights)} = native ${JSON.stringify(twinNative.weights)} (1e-4)`);
    check(twin.bars === twin.result.tasks.length, `one bar per task (${twin.bars})`);
    check(twin.streamed === twin.result.output.text, `twin tokens streamed into the page (${JSON.stringify(twin.streamed)})`);
    report.runs.twin_webgpu = { first_token_ms: twin.result.firstTokenMs, tokens_per_s: twin.result.output.decode_tokens_per_s };
  }
  await page.screenshot({ path: path.join(artifacts, "twin.png"), fullPage: true });

  check(problems.length === 0, `no page errors or CSP violations${problems.length ? ": " + problems.join(" | ") : ""}`);
  // 5. A real model by URL: SmolLM2-135M-Instruct Q4_1 (the GGUF the native tests use, linked into the
  //    served folder), greedy, on WebGPU (the device decoder: f32 activations, so its reference is native
  //    `chorus generate --weights f32`: the same tokens) and on the CPU fallback (the CPU engine in wasm,
  //    8-bit activations: the native default; at a step whose top-2 margin is inside the 8-bit rounding,
  //    0.15 here at step 5, it may take the f32 path's token instead, so it must equal one of the two
  //    native runs, and which one is printed). Tokens/s are reported.
  const gguf = path.join(process.env.CHORUS_HOME ?? path.join(process.env.HOME, ".cache/chorus"), "models/SmolLM2-135M-Instruct.Q4_1.gguf");
  check(fs.existsSync(gguf), `real model present (${gguf}; scripts/fetch-models smollm2)`);
  if (fs.existsSync(gguf)) {
    const local = path.join(dist, "local-models");
    fs.mkdirSync(local, { recursive: true });
    const link = path.join(local, path.basename(gguf));
    fs.rmSync(link, { force: true });
    fs.symlinkSync(gguf, link);
    const RPROMPT = "The capital of France is", RMAX = 8;
    const nativeGen = (weights) => JSON.parse(execFileSync(bin, ["generate", "--model", gguf, "--prompt", RPROMPT, "--max-new-tokens", String(RMAX), "--weights", weights, "--json"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim().split("\n").pop());
    const exact = nativeGen("f32"), engine = nativeGen("native");
    const rpage = await context.newPage();
    await rpage.goto(`${site.url}docs-example.html`);
    for (const [backend, refs] of [["webgpu", { f32: exact }], ["cpu", { native: engine, f32: exact }]]) {
      const t0 = Date.now();
      const got = await rpage.evaluate(async ({ url, prompt, max, backend }) => {
        const { client } = await import("./js/client.js");
        let progress = 0;
        try {
          const r = await client().generate(url, { prompt, backend, options: { max_new_tokens: max } }, (ev) => {
            if (ev.type === "progress") progress++;
          });
          return { ok: true, tokens: r.tokens, text: r.text, backend: r.backend, rate: r.decode_tokens_per_s, loadMs: r.loadMs, firstTokenMs: r.firstTokenMs, progress };
        } catch (e) {
          return { ok: false, error: String(e?.message ?? e) };
        }
      }, { url: `local-models/${path.basename(gguf)}`, prompt: RPROMPT, max: RMAX, backend });
      check(got.ok, `SmolLM2 by URL on ${backend} generated${got.ok ? "" : ": " + got.error}`);
      if (got.ok) {
        const same = Object.entries(refs).filter(([, r]) => JSON.stringify(r.tokens) === JSON.stringify(got.tokens)).map(([w]) => w);
        check(same.length > 0, `SmolLM2 on ${backend}: tokens ${JSON.stringify(got.tokens)} = native ${Object.entries(refs).map(([w, r]) => `--weights ${w} ${JSON.stringify(r.tokens)}`).join(" or ")} (equal: ${same.join(", ") || "none"})`);
        check(got.progress > 0, `SmolLM2 on ${backend}: progress events reached the page (${got.progress})`);
        report.runs[`smollm2_${backend}`] = { wall_ms: Date.now() - t0, load_ms: got.loadMs, first_token_ms: got.firstTokenMs, tokens_per_s: got.rate, native_cpu_tokens_per_s: engine.decode_tokens_per_s, equal_to: same };
      }
    }
    await rpage.close();
  }
  check(problems.length === 0, `no CSP violations or page errors after the real-model runs${problems.length ? ": " + problems.join(" | ") : ""}`);
} finally {
  await browser.close();
}

// 4. A browser without WebGPU (no --enable-unsafe-webgpu: navigator.gpu gives no adapter): "auto" runs on
//    the CPU with the same result, and asking for WebGPU is a clear error, not a crash.
const plain = await chromium.launch({ executablePath: browserPath, headless: true, args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
try {
  const page = await plain.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${site.url}docs-example.html`);
  const adapter = await page.evaluate(async () => (navigator.gpu ? (await navigator.gpu.requestAdapter()) !== null : false));
  check(!adapter, "the plain browser has no WebGPU adapter");
  const run = async (backend) => {
    await page.evaluate((backend) => {
      const el = document.getElementById("rev-demo");
      el.setAttribute("backend", backend);
      el.run();
    }, backend);
    await page.waitForFunction(() => ["done", "error"].includes(document.getElementById("rev-demo").getAttribute("state")), null, { timeout: TIMEOUT });
    return page.evaluate(() => {
      const el = document.getElementById("rev-demo");
      return { state: el.getAttribute("state"), result: el.result ?? null, status: el.shadowRoot.querySelector(".status").textContent };
    });
  };
  const forced = await run("webgpu");
  check(forced.state === "error" && /WebGPU is unavailable/.test(forced.status) && !/\{/.test(forced.status), `webgpu without an adapter is a clear error, not a debug dump (${forced.status})`);
  const colour = await page.evaluate(() => getComputedStyle(document.getElementById("rev-demo").shadowRoot.querySelector(".status")).color);
  check(colour === "rgb(185, 28, 28)", `the widget's error text is red (${colour})`);
  const auto = await run("auto");
  check(auto.state === "done" && auto.result?.backend === "cpu", `auto without WebGPU runs on the CPU (${auto.status})`);
  if (auto.result) compareFuse("no-WebGPU browser (CPU)", auto.result, nativeFuse("rev plant =", 16));
  check(errors.length === 0, `no page errors without WebGPU${errors.length ? ": " + errors.join(" | ") : ""}`);
} finally {
  await plain.close();
  await site.close();
}
fs.writeFileSync(path.join(artifacts, "report.json"), JSON.stringify(report, null, 1));
console.log(`report (not asserted): ${JSON.stringify(report)}`);
console.log(`screenshots: ${artifacts}/{playground,docs-widget,twin}.png`);
if (failures) {
  console.error(`e2e: ${failures} check(s) failed`);
  process.exit(1);
}
console.log("e2e: all checks passed");
