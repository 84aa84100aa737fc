// The lobby: the room-code form and quick match.
//
// Quick match opens a second socket, to the lobby room (/ws/game/lobby), only while
// searching: on `welcome` it sends `quickmatch` with the name, gets `matching` (its
// ticket, its place in line), then `matched` with a room, a mark and a seat token.
// The page stores the token and enters that room, whose socket takes the seat with
// it on `welcome` (room.js). The server drops a waiting ticket with its socket: after
// a reconnect the page asks again.

import { $, byTestId, toast } from "./dom.js";
import { ROOM_RE } from "./limits.js";
import { checkName, currentName, focusName, requireName } from "./name.js";
import { rememberName, saveSeat } from "./store.js";
import { Wire, jitteredBackoff } from "./wire.js";

const LOBBY_ROOM = "lobby"; // the room quick-match sockets wait in
const QUICK_RETRY_MIN_MS = 500;
const QUICK_RETRY_MAX_MS = 5_000;
const QUICK_BACKOFF = jitteredBackoff({
  floorMs: QUICK_RETRY_MIN_MS / 2, baseMs: QUICK_RETRY_MIN_MS, capMs: QUICK_RETRY_MAX_MS,
});

const el = {
  lobbyForm: $("#lobby-form"),
  roomInput: byTestId("room-input"),
  roomHint: $("#room-hint"),
  randomRoom: $("#random-room"),
  quick: $("#quick"),
  quickButton: byTestId("quick-match"),
  quickLabel: $('[data-testid="quick-match"] .quick-label'),
  quickStatus: byTestId("quick-match-status"),
  quickText: $('[data-testid="quick-match-status"] .quick-text'),
  quickBot: byTestId("quick-match-bot"),
};

let enterRoom = null; // navigation.js's enterRoom(room), given by initLobby

export function initLobby(options) {
  enterRoom = options.enterRoom;
  el.roomInput.addEventListener("input", () => validateRoomInput(false));
  el.randomRoom.addEventListener("click", () => {
    el.roomInput.value = randomRoomCode();
    validateRoomInput(false);
    el.roomInput.focus();
  });
  el.lobbyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!el.roomInput.value.trim()) el.roomInput.value = randomRoomCode();
    const room = validateRoomInput(true);
    const nameRaw = currentName();
    if (nameRaw && !checkName()) {
      focusName();
      return;
    }
    if (!room) {
      el.roomInput.focus();
      return;
    }
    if (nameRaw) rememberName(nameRaw);
    enterRoom(room);
  });
  el.quickButton.addEventListener("click", toggleQuickMatch);
  el.quickBot.addEventListener("click", () => {
    Q.gaveUp = false;
    renderQuickMatch();
    enterRoom(randomRoomCode(), { playComputer: true });
  });
}

// --- the room-code form ---------------------------------------------------------------
function randomRoomCode(length = 6) {
  const alphabet = "abcdefghjkmnpqrstuvwxyz23456789"; // no 0/o, 1/l/i
  const bytes = new Uint8Array(length);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

// The valid room code in the field, or null; `show` marks an invalid one.
function validateRoomInput(show) {
  const value = el.roomInput.value.trim();
  const ok = ROOM_RE.test(value);
  const field = el.roomInput.closest(".field");
  field.classList.toggle("invalid", show && !ok);
  el.roomHint.textContent = show && !ok
    ? "Room codes are 1–32 letters, digits, _ or -."
    : "Letters, digits, _ and -. Anyone with the code can watch.";
  return ok ? value : null;
}

// A room link with a code the server would refuse: show it in the form, marked invalid.
export function showRefusedRoomCode(code) {
  el.roomInput.value = code.slice(0, 64);
  validateRoomInput(true);
}

// --- quick match -------------------------------------------------------------------------
const Q = {
  searching: false,
  name: "",
  ticket: null, // from `matching`
  gaveUp: false, // the server gave up (`unmatched`): offer the computer
};

const quickWire = new Wire({
  retryDelay: (_code, attempt) => QUICK_BACKOFF(attempt), // any close code alike, 1012 too
  onRetry() {
    Q.ticket = null;
    renderQuickMatch();
  },
})
  .on("welcome", () => {
    quickWire.welcomed();
    quickWire.send({ type: "quickmatch", name: Q.name });
  })
  .on("matching", (msg) => {
    Q.ticket = typeof msg.ticket === "number" ? msg.ticket : null;
    renderQuickMatch();
  })
  .on("matched", onMatched)
  .on("unmatched", () => {
    stopQuickMatch();
    Q.gaveUp = true;
    renderQuickMatch();
  })
  .on("error", (msg) => {
    stopQuickMatch();
    toast(String(msg.message || msg.code || "Quick match failed."), "error", String(msg.code ?? ""));
  });
// Frames of the lobby room itself (its `state`, presence) are not handled.

function onMatched(msg) {
  const room = String(msg.room ?? "");
  if (!ROOM_RE.test(room) || (msg.mark !== "X" && msg.mark !== "O") || typeof msg.token !== "string") {
    return;
  }
  saveSeat(room, msg.mark, msg.token);
  stopQuickMatch();
  const opponent = typeof msg.opponent === "string" && msg.opponent ? msg.opponent : "an opponent";
  toast(`Matched with ${opponent}. You play ${msg.mark}.`, "success");
  enterRoom(room); // the stored token takes the seat on welcome
}

function toggleQuickMatch() {
  if (Q.searching) {
    stopQuickMatch();
    return;
  }
  const name = requireName("play a quick match");
  if (!name) return;
  Q.searching = true;
  Q.gaveUp = false;
  Q.name = name;
  Q.ticket = null;
  quickWire.open(LOBBY_ROOM);
  renderQuickMatch();
}

export function stopQuickMatch() {
  quickWire.close("done");
  Q.searching = false;
  Q.ticket = null;
  renderQuickMatch();
}

export function renderQuickMatch() {
  const state = !Q.searching ? "idle" : quickWire.isOpen ? "searching" : "connecting";
  el.quick.dataset.state = state;
  el.quickStatus.hidden = !Q.searching && !Q.gaveUp;
  el.quickStatus.dataset.ticket = Q.ticket == null ? "" : String(Q.ticket);
  el.quickStatus.dataset.state = Q.gaveUp ? "gave-up" : state;
  el.quickText.textContent = Q.gaveUp ? "Nobody came this time." : "Looking for an opponent…";
  el.quickBot.hidden = !Q.gaveUp;
  el.quickLabel.textContent = Q.searching ? "Cancel" : "Quick match";
  el.quickButton.setAttribute("aria-pressed", String(Q.searching));
}
