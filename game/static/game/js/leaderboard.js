// The leaderboard panel: GET /api/leaderboard on load, after every finished game
// (results are counted by a background job, so it asks again a little later too)
// and every half minute while the page is visible. It is one panel, moved between
// the lobby and the room's side column (navigation.js).

import { $, byTestId } from "./dom.js";
import { savedName } from "./store.js";

const LEADERBOARD_SIZE = 10;
const LEADERBOARD_URL = `/api/leaderboard?limit=${LEADERBOARD_SIZE}`;
const LEADERBOARD_REFRESH_MS = 30_000;
// After a game ends: the result is counted by a job, a moment later.
const LEADERBOARD_AFTER_GAME_MS = [300, 1_500, 4_000];

const el = {
  leaderboard: byTestId("leaderboard"),
  rows: $("#leaderboard-rows"),
  empty: $("#leaderboard-empty"),
};

const LB = {
  rows: null, // null until the first answer
  failed: false,
  seq: 0, // answers to older requests are ignored
  followups: [], // timers after a finished game
};

export async function loadLeaderboard() {
  const seq = ++LB.seq;
  let rows = null;
  try {
    const response = await fetch(LEADERBOARD_URL, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    rows = Array.isArray(body?.leaderboard) ? body.leaderboard : [];
  } catch {
    rows = null;
  }
  if (seq !== LB.seq) return; // a newer request was sent meanwhile
  if (rows === null) {
    LB.failed = true; // keep showing what we had
  } else {
    LB.failed = false;
    LB.rows = rows.slice(0, LEADERBOARD_SIZE);
  }
  renderLeaderboard();
}

export function refreshLeaderboardAfterGame() {
  LB.followups.forEach((timer) => window.clearTimeout(timer));
  LB.followups = LEADERBOARD_AFTER_GAME_MS.map((delay) => window.setTimeout(loadLeaderboard, delay));
}

export function initLeaderboard() {
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") loadLeaderboard();
  });
  window.setInterval(() => {
    if (document.visibilityState === "visible") loadLeaderboard();
  }, LEADERBOARD_REFRESH_MS);
}

function count(value) {
  return Number.isFinite(value) ? String(value) : "0";
}

function renderLeaderboard() {
  const rows = LB.rows;
  el.leaderboard.dataset.state = rows === null ? (LB.failed ? "error" : "loading") : rows.length ? "ready" : "empty";
  const me = savedName().trim();
  el.rows.replaceChildren(...(rows || []).map((row, index) => {
    const tr = document.createElement("tr");
    const name = String(row.name ?? "");
    tr.dataset.testid = "leaderboard-row";
    tr.dataset.name = name;
    if (me && name === me) tr.classList.add("me");
    const cell = (className, text) => {
      const td = document.createElement("td");
      td.className = className;
      td.textContent = text;
      return td;
    };
    const wld = document.createElement("td");
    wld.className = "lb-wld";
    wld.title = `${count(row.wins)} wins, ${count(row.losses)} losses, ${count(row.draws)} draws`;
    for (const [key, value] of [["w", row.wins], ["l", row.losses], ["d", row.draws]]) {
      if (key !== "w") wld.append("/");
      const span = document.createElement("span");
      span.className = `lb-${key}`;
      span.textContent = count(value);
      wld.append(span);
    }
    const streak = cell("lb-streak", count(row.streak));
    if (row.streak > 0) streak.classList.add("hot");
    tr.append(cell("lb-rank", String(index + 1)), cell("lb-name", name), wld, streak);
    return tr;
  }));
  let empty = "";
  if (rows === null) empty = LB.failed ? "The leaderboard is not available right now." : "Loading…";
  else if (!rows.length) empty = "No finished games yet. Play one!";
  el.empty.textContent = empty;
  el.empty.hidden = !empty;
}
