// The DLF playground: expert toggles, solver choice, tokens streamed in as they are made, coloured by
// the expert that steered them, and the α trace drawn per token. Everything heavy runs in the worker.
import { client } from "./client.js";
import { alphaChart, tokenSpan } from "./charts.js";
import { progressInto, status as show } from "./ui.js";

const FAMILY = "models/zoo/index.json";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
if (params.has("prompt")) $("prompt").value = params.get("prompt");
if (params.has("backend")) $("backend").value = params.get("backend");
if (params.has("max")) $("max").value = params.get("max");

let family = null;

const status = (text, error) => show($("status"), text, error);
const onProgress = progressInto($("progress"), $("status"));

// The prompt's task (its first word) selects that expert by default, as `chorus fuse` does.
const KEYWORDS = { add: "add", rev: "reverse", sort: "sort", get: "recall", date: "date" };
function taskOfPrompt(p) {
  return KEYWORDS[p.trim().split(/\s+/)[0]];
}

function renderExperts(tasks) {
  const box = $("experts");
  box.replaceChildren(Object.assign(document.createElement("legend"), { textContent: "Experts" }));
  const want = params.get("experts")?.split(",") ?? [taskOfPrompt($("prompt").value)].filter(Boolean);
  tasks.forEach((t, i) => {
    const label = document.createElement("label");
    label.className = `chip e${i % 6}`;
    const cb = Object.assign(document.createElement("input"), { type: "checkbox", value: t, checked: want.length ? want.includes(t) : true });
    label.append(cb, ` ${t}`);
    box.append(label);
  });
}

// One button per task with the index's example prompt: it fills the prompt and selects that expert.
function renderExamples(examples) {
  const box = $("examples");
  box.replaceChildren(...Object.entries(examples ?? {}).map(([task, prompt]) => {
    const b = Object.assign(document.createElement("button"), { type: "button", className: "example", textContent: prompt });
    b.addEventListener("click", () => {
      $("prompt").value = prompt;
      for (const cb of $("experts").querySelectorAll("input")) cb.checked = cb.value === task;
    });
    return b;
  }));
}

function chosenExperts() {
  return [...$("experts").querySelectorAll("input:checked")].map((c) => c.value);
}

async function load() {
  const backend = $("backend").value;
  $("run").disabled = true;
  try {
    family = await client().family(FAMILY, { backend }, onProgress);
    renderExperts(family.tasks);
    renderExamples(family.examples);
    $("progress").hidden = true;
    status(`ready: ${family.tasks.length} experts on ${family.backend} (loaded in ${family.loadMs.toFixed(0)} ms)`);
    $("run").disabled = false;
  } catch (e) {
    status(`could not load the models: ${e.message}`, true);
  }
}

async function run(ev) {
  ev?.preventDefault();
  const experts = chosenExperts();
  if (!experts.length) {
    status("choose at least one expert", true);
    return;
  }
  const solver = $("solver").value;
  const options = { max_new_tokens: Number($("max").value), solver, multi: $("multi").value };
  if (solver === "static") options.alpha = Number($("alpha").value);
  const out = $("output");
  out.replaceChildren(Object.assign(document.createElement("span"), { className: "prompt", textContent: $("prompt").value }));
  out.dataset.state = "running";
  out.chorusResult = null;
  const steps = [];
  $("run").disabled = true;
  status("fusing…");
  $("legend").replaceChildren(...experts.map((n) => Object.assign(document.createElement("span"), {
    className: `chip e${family.tasks.indexOf(n) % 6}`, textContent: n,
  })));
  // Colours follow the expert's position in the family, not in the selection.
  const colour = experts.map((n) => family.tasks.indexOf(n));
  try {
    const result = await client().fuse(FAMILY, { prompt: $("prompt").value, experts, options, backend: $("backend").value }, (e) => {
      if (e.type === "progress") return onProgress(e);
      if (e.type !== "step") return;
      steps.push(e.step);
      out.append(tokenSpan(e.step, colour));
      alphaChart($("chart"), steps, experts, { colours: colour });
    });
    out.chorusResult = result;
    out.dataset.state = "done";
    status(`done: ${result.tokens.length} tokens, stop: ${result.stop_reason}`);
    $("stats").textContent = `first token ${result.firstTokenMs?.toFixed(0)} ms after the request · ` +
      `${result.decode_tokens_per_s.toFixed(1)} tokens/s · α search ${(result.search_ms / Math.max(1, result.steps.length)).toFixed(2)} ms/token · ` +
      `backend ${result.backend} · solver ${result.solver}`;
  } catch (e) {
    out.dataset.state = "error";
    status(e.message, true);
  } finally {
    $("run").disabled = false;
  }
}

$("controls").addEventListener("submit", run);
$("solver").addEventListener("change", () => { $("alpha").disabled = $("solver").value !== "static"; });
$("backend").addEventListener("change", load);
$("prompt").addEventListener("change", () => {
  const t = taskOfPrompt($("prompt").value);
  if (!t || !family) return;
  for (const cb of $("experts").querySelectorAll("input")) cb.checked = cb.value === t;
});
await load();
if (params.has("run")) await run();
