// The Twin-Merging page: the router's weights for the prompt as bars, then the output of the shared
// model with every task's exclusive factors mixed by those weights, streamed token by token.
import { client } from "./client.js";
import { barChart } from "./charts.js";
import { progressInto, status as show } from "./ui.js";

const PACK = "models/zoo-twin/index.json";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const k of ["prompt", "backend", "max", "mode"]) if (params.has(k)) $(k).value = params.get(k);

const status = (text, error) => show($("status"), text, error);
const onEvent = progressInto($("progress"), $("status"));

async function run(ev) {
  ev?.preventDefault();
  const out = $("output");
  const backend = $("backend").value;
  out.replaceChildren(Object.assign(document.createElement("span"), { className: "prompt", textContent: $("prompt").value }));
  out.dataset.state = "running";
  out.chorusResult = null;
  $("run").disabled = true;
  try {
    // Route first so the bars appear before generation starts.
    const routed = await client().twin(PACK, { prompt: $("prompt").value, backend, routeOnly: true }, onEvent);
    $("progress").hidden = true;
    barChart($("bars"), routed.tasks, routed.weights);
    status("generating…");
    const options = { max_new_tokens: Number($("max").value), mode: $("mode").value };
    const result = await client().twin(PACK, { prompt: $("prompt").value, options, backend }, (e) => {
      if (e.type === "token") out.append(Object.assign(document.createElement("span"), { className: "tok", textContent: e.text }));
    });
    barChart($("bars"), result.tasks, result.weights);
    out.chorusResult = result;
    out.dataset.state = "done";
    const top = result.weights.indexOf(Math.max(...result.weights));
    status(`done: routed mostly to ${result.tasks[top]} (${result.weights[top].toFixed(3)}), stop: ${result.output.stop_reason}`);
    $("stats").textContent = `first token ${result.firstTokenMs?.toFixed(0)} ms · ${result.output.decode_tokens_per_s.toFixed(1)} tokens/s · backend ${result.backend} · mixing ${result.mode}`;
  } catch (e) {
    out.dataset.state = "error";
    status(e.message, true);
  } finally {
    $("run").disabled = false;
  }
}

$("controls").addEventListener("submit", run);
$("run").disabled = false;
status("ready (the pack loads on the first run)");
if (params.has("run")) await run();
