// The page's side of the Chorus worker: one worker per page (shared by the playground and every
// widget), requests as promises, streamed events (progress, steps, tokens) to a callback.
let shared = null;

export class ChorusClient {
  constructor(workerUrl = new URL("./worker.js", import.meta.url)) {
    this.worker = new Worker(workerUrl, { type: "module" });
    this.pending = new Map();
    this.next = 1;
    this.worker.onmessage = ({ data }) => {
      const p = this.pending.get(data.id);
      if (!p) return;
      if (data.type === "done") {
        this.pending.delete(data.id);
        p.resolve(data.result);
      } else if (data.type === "error") {
        this.pending.delete(data.id);
        p.reject(new Error(data.message));
      } else {
        p.onEvent?.(data);
      }
    };
    this.worker.onerror = (e) => {
      // A worker that fails to start (a missing module, a CSP refusal) fails every request.
      const err = new Error(`Chorus worker failed: ${e.message || "could not start (see the console)"}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
  }

  request(op, payload, onEvent) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onEvent });
      this.worker.postMessage({ id, op, ...payload });
    });
  }

  /** Loads (once) the model family behind `url` (an index.json) and describes it. */
  family(url, { backend = "auto", sha256 } = {}, onEvent) {
    return this.request("family", { url: absolute(url), backend, sha256 }, onEvent);
  }

  /** Fused decoding; `onEvent` sees progress events and one `step` event per token. */
  fuse(url, { prompt, experts, options, backend = "auto", sha256 } = {}, onEvent) {
    return this.request("fuse", { url: absolute(url), prompt, experts, options, backend, sha256 }, onEvent);
  }

  /** Plain generation with one model file (a GGUF URL, loaded once per backend); `onEvent` sees
   *  progress events and one `token` event per token. */
  generate(url, { prompt, chat = false, options, backend = "auto", sha256 } = {}, onEvent) {
    return this.request("generate", { url: absolute(url), prompt, chat, options, backend, sha256 }, onEvent);
  }

  /** Twin-Merging: route `prompt` and generate (or only route, with `routeOnly`). */
  twin(url, { prompt, options, backend = "auto", sha256, routeOnly = false } = {}, onEvent) {
    return this.request("twin", { url: absolute(url), prompt, options, backend, sha256, routeOnly }, onEvent);
  }
}

/** The page's one client. */
export function client() {
  shared ??= new ChorusClient();
  return shared;
}

function absolute(url) {
  return new URL(url, document.baseURI).href;
}

/** Formats a progress event for a status line. */
export function describeProgress(ev) {
  if (ev.phase === "load") return "loading weights onto the device…";
  const mb = (n) => (n / 1e6).toFixed(2);
  const where = ev.cached ? "from the cache" : "downloading";
  return ev.total ? `${where}: ${mb(ev.loaded)} / ${mb(ev.total)} MB` : `${where}: ${mb(ev.loaded)} MB`;
}
