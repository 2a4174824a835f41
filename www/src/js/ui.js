// Status line and progress bar shared by the site's pages.
import { describeProgress } from "./client.js";

/** Shows `text` in the status element, in red when `error`. */
export function status(el, text, error = false) {
  el.textContent = text;
  el.classList.toggle("error", error);
}

/** A worker event handler that moves `bar` and describes downloads in `statusEl` (other events pass). */
export function progressInto(bar, statusEl) {
  return (ev) => {
    if (ev.type !== "progress") return;
    bar.hidden = false;
    if (ev.total) {
      bar.max = ev.total;
      bar.value = Math.min(ev.loaded, ev.total);
    }
    status(statusEl, describeProgress(ev));
  };
}
