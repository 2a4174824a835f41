// The Chorus Web Worker: owns the wasm module and every loaded model, so the page's thread never runs
// a forward pass. Requests come as {id, op, ...}; answers go back as {id, type: "progress" | "step" |
// "token" | "done" | "error", ...}. Families and twin packs are loaded once per (URL, backend) and shared by
// every request (several widgets on one page use one copy of the weights).
import init, { ChorusFusion, loadModel, loadTwin, sha256Hex } from "../pkg/chorus_web.js";

const ready = init({ module_or_path: new URL("../pkg/chorus_web_bg.wasm", import.meta.url) });
const families = new Map();
const twins = new Map();
const models = new Map();

// The site's model indexes are small JSON files that list every model file with its SHA-256; the index
// itself is checked against the digest the page gives (a widget's `sha256` attribute).
async function fetchIndex(url, sha256) {
  const res = await fetch(url, { cache: "no-cache" });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  const digest = sha256Hex(bytes);
  checkDigest(url, digest, sha256);
  let index;
  try {
    index = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new Error(`${url}: not JSON (${e.message})`);
  }
  return { index, digest };
}

function checkDigest(url, digest, sha256) {
  if (sha256 && digest !== sha256.toLowerCase()) throw new Error(`${url}: sha256 mismatch (expected ${sha256}, got ${digest})`);
}

// Index entries hold paths relative to the index; the worker resolves them against the index's URL.
const resolve = (base, f) => ({ url: new URL(f.url, base).href, sha256: f.sha256 });
const source = (base, m) => ({
  name: m.name,
  config: resolve(base, m.config),
  tokenizer: resolve(base, m.tokenizer),
  weights: m.weights.map((w) => resolve(base, w)),
});

// Progress of a whole family: bytes over every file the index lists, then tensors per model.
function progressTracker(post, files) {
  const sizes = new Map(files.map((f) => [f.url, f.bytes || 0]));
  const total = [...sizes.values()].reduce((a, b) => a + b, 0);
  const seen = new Map();
  return (ev) => {
    if (ev.phase === "download") seen.set(ev.url, ev.loaded);
    const loaded = [...seen.values()].reduce((a, b) => a + b, 0);
    post("progress", { phase: ev.phase, loaded, total, cached: ev.cached ?? false, url: ev.url ?? null });
  };
}

// Loads once per key; a failed load is forgotten so that it may be retried. Every request that names a
// digest is checked against the loaded index's, also when its models are already loaded.
async function once(cache, req, load) {
  const key = `${req.url}|${req.backend}`;
  if (!cache.has(key)) {
    const p = load();
    cache.set(key, p);
    p.catch(() => cache.delete(key));
  }
  const entry = await cache.get(key);
  checkDigest(req.url, entry.digest, req.sha256);
  return entry;
}

function loadFamily(req, post) {
  return once(families, req, async () => {
    const { index, digest } = await fetchIndex(req.url, req.sha256);
    if (index.format !== "chorus-site-family/1") throw new Error(`${req.url}: format ${index.format}, expected chorus-site-family/1`);
    const members = [index.large, index.base, ...Object.values(index.experts)];
    const files = members.flatMap((m) => [m.config, m.tokenizer, ...m.weights]);
    const opts = { backend: req.backend, onProgress: progressTracker(post, files) };
    const t0 = performance.now();
    const large = await loadModel(source(req.url, index.large), opts);
    const base = await loadModel(source(req.url, index.base), opts);
    const experts = {};
    for (const [task, m] of Object.entries(index.experts)) experts[task] = await loadModel(source(req.url, m), opts);
    return { index, digest, large, base, experts, loadMs: performance.now() - t0 };
  });
}

function loadTwinPack(req, post) {
  return once(twins, req, async () => {
    const { index, digest } = await fetchIndex(req.url, req.sha256);
    if (index.format !== "chorus-site-twin/1") throw new Error(`${req.url}: format ${index.format}, expected chorus-site-twin/1`);
    const files = [index.twin, index.router, index.routerWeights, ...index.factors, index.shared.config, index.shared.tokenizer, ...index.shared.weights];
    const t0 = performance.now();
    const twin = await loadTwin({
      name: index.name,
      twin: resolve(req.url, index.twin),
      factors: index.factors.map((f) => resolve(req.url, f)),
      shared: source(req.url, index.shared),
      router: resolve(req.url, index.router),
      routerWeights: resolve(req.url, index.routerWeights),
    }, { backend: req.backend, onProgress: progressTracker(post, files) });
    return { index, digest, twin, loadMs: performance.now() - t0 };
  });
}

// One model file (a GGUF) by URL, loaded once per (URL, backend); its SHA-256, when given, is checked by
// loadModel (downloaded or cached bytes alike) and then pins the entry.
function loadOne(req, post) {
  return once(models, req, async () => {
    const t0 = performance.now();
    const onProgress = (ev) => post("progress", { ...ev, url: ev.url ?? req.url });
    const model = await loadModel({ url: req.url, sha256: req.sha256 }, { backend: req.backend, onProgress });
    return { model, digest: req.sha256?.toLowerCase() ?? null, loadMs: performance.now() - t0 };
  });
}

const ops = {
  async generate(req, post) {
    const m = await loadOne(req, post);
    const t0 = performance.now();
    let first = null;
    const result = await m.model.generate(req.prompt, req.chat ?? false, req.options ?? {}, (id, text) => {
      first ??= performance.now() - t0;
      post("token", { token: id, text });
    });
    return { ...result, backend: m.model.backend, loadMs: m.loadMs, firstTokenMs: first, totalMs: performance.now() - t0 };
  },
  async family(req, post) {
    const f = await loadFamily(req, post);
    return { tasks: Object.keys(f.experts), examples: f.index.examples, backend: f.large.backend, loadMs: f.loadMs };
  },
  async fuse(req, post) {
    const f = await loadFamily(req, post);
    const names = req.experts?.length ? req.experts : Object.keys(f.experts);
    const fusion = new ChorusFusion(f.large, f.base);
    try {
      for (const n of names) {
        if (!f.experts[n]) throw new Error(`no expert ${JSON.stringify(n)} in ${req.url} (experts: ${Object.keys(f.experts).join(", ")})`);
        fusion.addExpert(n, f.experts[n]);
      }
      const t0 = performance.now();
      let first = null;
      const result = await fusion.fuse(req.prompt, req.options ?? {}, (step) => {
        first ??= performance.now() - t0;
        post("step", { step });
      });
      return { ...result, backend: f.large.backend, firstTokenMs: first, totalMs: performance.now() - t0 };
    } finally {
      fusion.free();
    }
  },
  async twin(req, post) {
    const t = await loadTwinPack(req, post);
    if (req.routeOnly) return { tasks: t.twin.tasks, weights: await t.twin.route(req.prompt), backend: t.twin.backend };
    const t0 = performance.now();
    let first = null;
    const result = await t.twin.generate(req.prompt, req.options ?? {}, (id, text) => {
      first ??= performance.now() - t0;
      post("token", { token: id, text });
    });
    return { ...result, backend: t.twin.backend, firstTokenMs: first, totalMs: performance.now() - t0 };
  },
};

self.onmessage = async ({ data: req }) => {
  const post = (type, extra) => self.postMessage({ ...extra, id: req.id, type });
  try {
    await ready;
    const op = ops[req.op];
    if (!op) throw new Error(`unknown request ${JSON.stringify(req.op)}`);
    post("done", { result: await op(req, post) });
  } catch (e) {
    post("error", { message: String(e?.message ?? e) });
  }
};
