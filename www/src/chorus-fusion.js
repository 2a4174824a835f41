// <chorus-fusion>: a live Dynamic Logit Fusion widget for documentation pages. One script tag and one
// element:
//   <script type="module" src="/chorus/chorus-fusion.js"></script>
//   <chorus-fusion src="/chorus/models/zoo/index.json" prompt="add 12 34 =" experts="add"></chorus-fusion>
// Attributes: src (a family index), prompt, experts (comma-separated; default: the prompt's task, or all),
// solver, alpha, max-tokens, backend (auto | webgpu | cpu), sha256 (of the index; every file it lists is
// checked against its own digest), autorun (run on load instead of on click). The element fires
// `chorus-done` (detail: the result) and `chorus-error`; its `state` attribute is idle | loading |
// running | done | error. Styles come from chorus-fusion.css beside this file (no inline styles, so a
// strict CSP holds). All widgets of a page share one worker and one copy of each family.
import { client, describeProgress } from "./js/client.js";
import { alphaChart, tokenSpan } from "./js/charts.js";

const KEYWORDS = { add: "add", rev: "reverse", sort: "sort", get: "recall", date: "date" };

class ChorusFusionElement extends HTMLElement {
  static observedAttributes = ["prompt"];

  connectedCallback() {
    if (this.shadowRoot) return;
    const root = this.attachShadow({ mode: "open" });
    const css = Object.assign(document.createElement("link"), { rel: "stylesheet", href: new URL("./chorus-fusion.css", import.meta.url).href });
    const box = document.createElement("div");
    box.className = "box";
    box.innerHTML = `
      <div class="row"><code class="prompt"></code><button type="button">Run</button></div>
      <div class="out" aria-live="polite"></div>
      <svg class="chart"></svg>
      <div class="status"></div>`;
    root.append(css, box);
    this.$ = (sel) => box.querySelector(sel);
    this.$(".prompt").textContent = this.getAttribute("prompt") ?? "";
    this.$("button").addEventListener("click", () => this.run());
    this.setAttribute("state", "idle");
    if (this.hasAttribute("autorun")) this.run();
  }

  attributeChangedCallback() {
    if (this.$) this.$(".prompt").textContent = this.getAttribute("prompt") ?? "";
  }

  async run() {
    const src = this.getAttribute("src");
    const prompt = this.getAttribute("prompt") ?? "";
    if (!src) return this.fail(new Error("<chorus-fusion> needs a src attribute (a model family index.json)"));
    const backend = this.getAttribute("backend") ?? "auto";
    const sha256 = this.getAttribute("sha256") ?? undefined;
    const options = { max_new_tokens: Number(this.getAttribute("max-tokens") ?? 24), solver: this.getAttribute("solver") ?? "paper" };
    if (this.hasAttribute("alpha")) options.alpha = Number(this.getAttribute("alpha"));
    this.$("button").disabled = true;
    this.$(".out").replaceChildren();
    this.setAttribute("state", "loading");
    try {
      const family = await client().family(src, { backend, sha256 }, (e) => this.progress(e));
      let experts = this.getAttribute("experts")?.split(",").map((s) => s.trim()).filter(Boolean);
      if (!experts?.length) {
        const t = KEYWORDS[prompt.trim().split(/\s+/)[0]];
        experts = t && family.tasks.includes(t) ? [t] : family.tasks;
      }
      const colours = experts.map((n) => Math.max(0, family.tasks.indexOf(n)));
      this.setAttribute("state", "running");
      this.$(".status").textContent = `fusing with ${experts.join(", ")}…`;
      const steps = [];
      const result = await client().fuse(src, { prompt, experts, options, backend, sha256 }, (e) => {
        if (e.type !== "step") return;
        steps.push(e.step);
        this.$(".out").append(tokenSpan(e.step, colours));
        alphaChart(this.$(".chart"), steps, experts, { colours });
      });
      this.result = result;
      this.$(".status").textContent = `${result.tokens.length} tokens · ${result.decode_tokens_per_s.toFixed(1)} tokens/s · ${result.backend}`;
      this.setAttribute("state", "done");
      this.dispatchEvent(new CustomEvent("chorus-done", { detail: result, bubbles: true }));
    } catch (e) {
      this.fail(e);
    } finally {
      this.$("button").disabled = false;
    }
  }

  progress(e) {
    if (e.type === "progress") this.$(".status").textContent = describeProgress(e);
  }

  fail(e) {
    this.setAttribute("state", "error");
    this.$(".status").textContent = e.message;
    this.$(".status").classList.add("error");
    this.dispatchEvent(new CustomEvent("chorus-error", { detail: e.message, bubbles: true }));
  }
}

if (!customElements.get("chorus-fusion")) customElements.define("chorus-fusion", ChorusFusionElement);
