// Finding elements, and toasts: the short notes in the corner (errors, "Link copied").

const TOAST_MS = 4_000;
const TOASTS_SHOWN = 3; // the oldest goes when a fourth arrives

export const $ = (selector, root = document) => root.querySelector(selector);
export const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

const toasts = $("#toasts");

// kind: info | success | error. `code` (an error frame's code) lands in data-code.
export function toast(text, kind = "info", code = "") {
  const item = document.createElement("div");
  item.className = `toast toast-${kind}`;
  item.setAttribute("role", kind === "error" ? "alert" : "status");
  item.dataset.testid = "toast";
  if (code) item.dataset.code = code;
  item.textContent = text;
  toasts.append(item);
  while (toasts.children.length > TOASTS_SHOWN) toasts.firstElementChild.remove();
  window.setTimeout(() => {
    item.classList.add("leaving");
    window.setTimeout(() => item.remove(), 300);
  }, TOAST_MS);
}
