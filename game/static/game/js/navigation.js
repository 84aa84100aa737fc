// Where the page is: the lobby at "/" or a room at "/?room=<code>", e.g.
// https://host/?room=k7m2qp. Opening a room link goes straight into the room as a
// spectator (and back into your seat if this browser holds a seat token for it).
// Owns the URL and history, the title, which view shows, and the header's room chip
// (room code, copy link, leave). The name field and the leaderboard panel are one
// element each, moved into the view that shows.

import { $, byTestId, toast } from "./dom.js";
import { loadLeaderboard } from "./leaderboard.js";
import { ROOM_RE } from "./limits.js";
import { showRefusedRoomCode, stopQuickMatch } from "./lobby.js";
import { closeRoom, currentRoom, openRoom } from "./room.js";

const el = {
  lobby: $("#lobby"),
  roomView: $("#room"),
  roomChip: $("#room-chip"),
  roomCode: byTestId("room-code"),
  copyLink: byTestId("copy-link"),
  leave: $("#leave"),
  brand: $("#brand"),
  connection: byTestId("connection"),
  nameField: $("#name-field"),
  nameSlot: { lobby: $("#name-slot-lobby"), room: $("#name-slot-room") },
  leaderboard: byTestId("leaderboard"),
  leaderboardSlot: { lobby: $("#leaderboard-slot-lobby"), room: $("#leaderboard-slot-room") },
};

function roomFromUrl() {
  return new URLSearchParams(window.location.search).get("room");
}

function roomUrl(room) {
  const url = new URL(window.location.href);
  url.search = `?room=${encodeURIComponent(room)}`;
  url.hash = "";
  return url.toString();
}

export function enterRoom(room, { push = true, playComputer = false } = {}) {
  if (currentRoom() === room) return;
  stopQuickMatch();
  if (push) window.history.pushState({ room }, "", roomUrl(room));
  document.title = `Room ${room} · Tictac live`;
  el.roomCode.textContent = room;
  showView("room");
  openRoom(room, { playComputer });
}

// giveUpSeat: the Leave button (the seat is given up; browser navigation keeps it).
export function leaveRoom({ push = true, giveUpSeat = false } = {}) {
  const wasInRoom = currentRoom() !== null;
  closeRoom({ giveUpSeat });
  if (push) window.history.pushState({}, "", window.location.pathname);
  document.title = "Tictac live · tic-tac-toe with friends";
  showView("lobby");
  if (wasInRoom) loadLeaderboard();
}

// view: lobby | room
function showView(view) {
  el.nameSlot[view].append(el.nameField);
  el.leaderboardSlot[view].append(el.leaderboard);
  el.lobby.hidden = view !== "lobby";
  el.roomView.hidden = view !== "room";
  el.roomChip.hidden = view !== "room";
  el.connection.hidden = view !== "room";
  document.body.dataset.view = view;
}

// Show what the URL names (on load, and on back/forward).
export function route() {
  const room = roomFromUrl();
  if (room !== null && ROOM_RE.test(room)) {
    enterRoom(room, { push: false });
    return;
  }
  leaveRoom({ push: false });
  if (room !== null) showRefusedRoomCode(room);
}

async function copyLink() {
  const url = roomUrl(currentRoom());
  let ok = false;
  try {
    await navigator.clipboard.writeText(url);
    ok = true;
  } catch {
    const area = document.createElement("textarea");
    area.value = url;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    area.remove();
  }
  el.copyLink.dataset.copied = ok ? "true" : "false";
  toast(ok ? "Link copied. Send it to a friend." : `Copy this link: ${url}`, ok ? "success" : "info");
  window.setTimeout(() => { delete el.copyLink.dataset.copied; }, 2000);
}

export function initNavigation() {
  el.copyLink.addEventListener("click", copyLink);
  el.leave.addEventListener("click", () => leaveRoom({ giveUpSeat: true }));
  el.brand.addEventListener("click", (event) => {
    event.preventDefault();
    if (currentRoom() !== null) leaveRoom();
  });
  window.addEventListener("popstate", () => route());
}
