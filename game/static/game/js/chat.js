// Chat: the room's messages and the form that sends one (seated players only).
// room.js feeds it `chat` frames and tells it who is sending; the text reaches the
// DOM through textContent only.

import { $, byTestId, toast } from "./dom.js";
import { CHAT_MAX, chatProblem, codePoints } from "./limits.js";

const CHAT_KEEP = 200; // lines kept; older ones leave the log

const el = {
  log: byTestId("chat-log"),
  empty: $("#chat-empty"),
  form: $("#chat-form"),
  input: byTestId("chat-input"),
  send: byTestId("chat-send"),
  count: $("#chat-count"),
};

let lines = []; // {mark, name, text}, oldest first
let send = () => false; // the room socket's send(message), given by initChat

// sendMessage(message) sends on the room socket and says whether it went out.
export function initChat(sendMessage) {
  send = sendMessage;
  el.form.addEventListener("submit", sendChat);
  el.input.maxLength = CHAT_MAX * 2;
  el.input.addEventListener("input", renderCount);
}

export function clearChat() {
  lines = [];
  renderLog(false, null);
}

// A `chat` frame. myMark: the mark this page holds or is reclaiming, else null.
export function addChatLine(msg, myMark) {
  lines.push({
    mark: msg.mark === "X" || msg.mark === "O" ? msg.mark : "",
    name: String(msg.name ?? ""),
    text: String(msg.text ?? ""),
  });
  if (lines.length > CHAT_KEEP) lines.splice(0, lines.length - CHAT_KEEP);
  renderLog(true, myMark);
}

// seatedAs: the seated player's mark, else null; name: that player's name; live: welcomed.
export function renderChatForm({ seatedAs, name, live }) {
  const ok = Boolean(seatedAs && live);
  el.input.disabled = !ok;
  el.send.disabled = !ok;
  el.input.placeholder = seatedAs ? `Message as ${name}…` : "Take a seat to chat";
}

function sendChat(event) {
  event.preventDefault();
  const text = el.input.value.trim();
  if (codePoints(text) < 1) return;
  const problem = chatProblem(text);
  if (problem) {
    toast(problem, "error", "bad_message");
    return;
  }
  if (send({ type: "chat", text })) {
    el.input.value = "";
    renderCount();
  } else {
    toast("Not connected: the message was not sent.", "error");
  }
}

function renderCount() {
  const n = codePoints(el.input.value);
  el.count.textContent = n > CHAT_MAX - 40 ? `${CHAT_MAX - n}` : "";
  el.count.classList.toggle("over", n > CHAT_MAX);
}

// appended: only lines not shown yet are added (a full rerender when lines were
// trimmed from the front).
function renderLog(appended, myMark) {
  const log = el.log;
  const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  if (!appended) log.replaceChildren();
  const start = appended ? log.children.length : 0;
  // Appended to a full log, older lines were trimmed: draw it anew.
  if (appended && lines.length <= log.children.length) return renderLog(false, myMark);
  for (const entry of lines.slice(start)) {
    const li = document.createElement("li");
    li.className = "chat-line";
    li.dataset.mark = entry.mark;
    if (entry.mark && entry.mark === myMark) li.classList.add("mine");
    const badge = document.createElement("span");
    badge.className = "chat-mark";
    badge.textContent = entry.mark || "·";
    const name = document.createElement("span");
    name.className = "chat-name";
    name.textContent = entry.name;
    const text = document.createElement("span");
    text.className = "chat-text";
    text.textContent = entry.text;
    const head = document.createElement("span");
    head.className = "chat-head";
    head.append(badge, name);
    li.append(head, text);
    log.append(li);
  }
  el.empty.hidden = lines.length > 0;
  if (!appended || nearBottom) log.scrollTop = log.scrollHeight;
  return undefined;
}
