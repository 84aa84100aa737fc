// The room view: the room socket, the game (board, status, players, audience, seat,
// computer opponent, rematch), the connection indicator and the footer.
//
// Entering a room (navigation.js calls openRoom) connects as a spectator; if this
// browser holds a seat token for the room, every `welcome` sends `join` with it to
// reclaim the seat (after a reload, a reconnect, a 1012 drain, or a quick match).
// The page keeps the `state` with the highest version it has seen in the room.

import { addChatLine, clearChat, initChat, renderChatForm } from "./chat.js";
import { $, byTestId, toast } from "./dom.js";
import { refreshLeaderboardAfterGame } from "./leaderboard.js";
import { validName } from "./limits.js";
import { currentName, onNameEnter, requireName } from "./name.js";
import { forgetSeat, saveSeat, savedName, seatMark, seatToken } from "./store.js";
import { Wire, jitteredBackoff } from "./wire.js";

const BACKOFF = jitteredBackoff({ baseMs: 500, capMs: 10_000 });
const POLICY_DELAY_MIN_MS = 15_000; // close 1008 (flooding): do not come straight back
const POLICY_DELAY_MAX_MS = 30_000;
const HANDSHAKE_TIMEOUT_MS = 10_000;
const PING_EVERY_MS = 20_000;
const PONG_TIMEOUT_MS = 30_000; // a ping unanswered this long: the socket is dead
const BOT_WAIT_MS = 8_000; // "Calling the computer…" gives up after this long
const LINES = [
  [0, 1, 2], [3, 4, 5], [6, 7, 8],
  [0, 3, 6], [1, 4, 7], [2, 5, 8],
  [0, 4, 8], [2, 4, 6],
];

const SVG = {
  X: '<svg viewBox="0 0 100 100" class="glyph glyph-x" aria-hidden="true">' +
    '<path d="M27 27 L73 73"/><path d="M73 27 L27 73"/></svg>',
  O: '<svg viewBox="0 0 100 100" class="glyph glyph-o" aria-hidden="true">' +
    '<circle cx="50" cy="50" r="25"/></svg>',
};

const other = (mark) => (mark === "X" ? "O" : "X");

const el = {
  connection: byTestId("connection"),
  connText: $("#connection .conn-text"),
  status: byTestId("status"),
  statusSub: $("#status-sub"),
  statusCard: $("#status-card"),
  board: $("#board"),
  cells: Array.from({ length: 9 }, (_, i) => byTestId(`cell-${i}`)),
  strike: $("#strike"),
  strikeLine: $("#strike line"),
  seatPanel: $("#seat-panel"),
  watchNote: $("#watch-note"),
  join: byTestId("join"),
  bot: byTestId("bot"),
  botLabel: $('[data-testid="bot"] span'),
  rematch: byTestId("rematch"),
  rematchNote: byTestId("rematch-note"),
  players: { X: byTestId("player-X"), O: byTestId("player-O") },
  myMark: byTestId("my-mark"),
  spectators: byTestId("spectators"),
  spectatorsLabel: $("#spectators-label"),
  version: byTestId("version"),
  server: byTestId("server"),
  latency: byTestId("latency"),
};

// --- the room view's state --------------------------------------------------------
const S = {
  room: null, // the room shown, null in the lobby
  conn: "closed", // open | connecting | closed  (the indicator's data-state)
  welcomed: false, // the live socket got `welcome`
  everWelcomed: false, // in this room: decides "Connecting" vs "Reconnecting"
  server: "",
  latency: null,
  state: null, // the accepted `state` with the highest version
  myMark: null, // "X" | "O" | null
  seat: "spectator", // spectator | pending (join sent) | seated (joined received)
  pendingCell: null,
  botPending: false,
  botTimer: 0,
  wantComputer: false, // the lobby asked for a game against the computer in this room
};
let countdownTimer = 0; // redraws "Reconnecting in 3s…" while a retry waits

// --- the room socket --------------------------------------------------------------
const wire = new Wire({
  retryDelay: (code, attempt) => (code === 1008
    ? POLICY_DELAY_MIN_MS + Math.random() * (POLICY_DELAY_MAX_MS - POLICY_DELAY_MIN_MS)
    : BACKOFF(attempt)),
  handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
  pingEveryMs: PING_EVERY_MS,
  pongTimeoutMs: PONG_TIMEOUT_MS,
  onConnecting() {
    stopCountdown();
    S.welcomed = false;
    setConn("connecting");
  },
  onDown(code) {
    S.welcomed = false;
    if (code === 1008) {
      toast("The server closed the connection (too many messages). Reconnecting shortly.", "error");
    }
  },
  onRetry() {
    S.pendingCell = null;
    stopCountdown();
    countdownTimer = window.setInterval(renderConnection, 250);
    setConn("connecting");
  },
})
  .on("welcome", onWelcome)
  .on("state", onState)
  .on("joined", onJoined)
  .on("left", onLeft)
  .on("chat", (msg) => addChatLine(msg, shownMark()))
  .on("pong", onPong)
  .on("error", onError);

function stopCountdown() {
  window.clearInterval(countdownTimer);
  countdownTimer = 0;
}

function disconnect() {
  wire.close("leaving");
  stopCountdown();
  S.welcomed = false;
  setConn("closed");
}

function setConn(conn) {
  S.conn = conn;
  render();
}

export function currentRoom() {
  return S.room;
}

export function openRoom(room, { playComputer = false } = {}) {
  disconnect();
  S.wantComputer = playComputer;
  S.room = room;
  S.state = null;
  S.server = "";
  S.latency = null;
  S.everWelcomed = false;
  S.pendingCell = null;
  stopBotPending();
  const token = seatToken(room);
  const mark = seatMark(room);
  S.myMark = token && (mark === "X" || mark === "O") ? mark : null;
  S.seat = token ? "pending" : "spectator";
  clearChat();
  wire.open(room);
}

// Leaving the room with the Leave button gives the seat up (a running game is forfeited).
export function closeRoom({ giveUpSeat = false } = {}) {
  if (giveUpSeat && S.seat === "seated" && S.welcomed) {
    wire.send({ type: "leave" }); // sent before the close frame
    forgetSeat(S.room);
  }
  S.wantComputer = false;
  disconnect();
  S.room = null;
  S.state = null;
  S.myMark = null;
  S.seat = "spectator";
  clearChat();
  render();
}

// --- incoming frames ----------------------------------------------------------------
function onWelcome(msg) {
  if (msg.room && msg.room !== S.room) return;
  S.welcomed = true;
  S.everWelcomed = true;
  S.server = String(msg.server ?? "");
  S.conn = "open";
  wire.welcomed();
  const token = seatToken(S.room);
  if (token) {
    S.seat = "pending";
    const stored = savedName();
    const name = validName(currentName()) ? currentName() : validName(stored) ? stored : "Player";
    wire.send({ type: "join", name, token });
  } else if (S.wantComputer) {
    S.seat = "pending";
    wire.send({ type: "join", name: validName(currentName()) ? currentName() : "Player" });
  } else if (S.seat !== "spectator") {
    S.seat = "spectator";
    S.myMark = null;
  }
  render();
}

function onState(msg) {
  if (msg.room && msg.room !== S.room) return;
  if (typeof msg.version !== "number" || !Array.isArray(msg.board)) return;
  // Keep the game of the highest version seen in this room (across reconnects too), the
  // later one on a tie, and the presence of the latest count (presence_at): broadcasts
  // from different replicas can arrive out of order.
  const previous = S.state;
  const next = mergeState(msg, previous);
  if (next === previous) return;
  S.state = next;
  S.pendingCell = null;
  if (previous && previous.status === "playing" && (msg.status === "won" || msg.status === "draw")) {
    refreshLeaderboardAfterGame();
  }
  if (S.botPending && msg.players && S.myMark && msg.players[other(S.myMark)]) {
    stopBotPending();
  }
  render(previous);
}

function mergeState(msg, kept) {
  if (!kept) return msg;
  const [game, other] = msg.version >= kept.version ? [msg, kept] : [kept, msg];
  if ((other.presence_at ?? 0) <= (game.presence_at ?? 0)) return game;
  const players = {};
  for (const mark of ["X", "O"]) {
    const seat = game.players?.[mark] ?? null;
    const before = other.players?.[mark] ?? null;
    players[mark] = seat && before && before.name === seat.name && !seat.bot
      ? { ...seat, online: before.online }
      : seat;
  }
  return { ...game, players, spectators: other.spectators, presence_at: other.presence_at };
}

function onJoined(msg) {
  if (msg.mark !== "X" && msg.mark !== "O") return;
  const wasSeated = S.seat === "seated" || seatToken(S.room);
  S.myMark = msg.mark;
  S.seat = "seated";
  saveSeat(S.room, msg.mark, typeof msg.token === "string" ? msg.token : null);
  if (S.wantComputer) {
    S.wantComputer = false;
    askBot();
  } else if (!wasSeated) {
    const alone = !S.state?.players?.[other(msg.mark)];
    toast(`You play ${msg.mark}.${alone ? " Share the link to invite an opponent." : ""}`, "info");
  }
  render();
}

// A seat was given up (`leave`) or released (its holder stayed offline). If it is the
// seat this page holds, another tab of ours left it, or the server released it.
function onLeft(msg) {
  const name = String(msg.name ?? "");
  if (S.seat === "seated" && msg.mark === S.myMark) {
    forgetSeat(S.room);
    S.myMark = null;
    S.seat = "spectator";
    toast(msg.reason === "offline"
      ? "Your seat was released while you were away. Take a seat to play again."
      : "You gave up your seat. Take a seat to play again.", "info");
  } else if (msg.forfeit && S.seat === "seated") {
    toast(`${name} left: you win by forfeit.`, "success");
    refreshLeaderboardAfterGame();
  } else {
    toast(`${name} left${msg.forfeit ? " (forfeit)" : ""}.`, "info");
  }
  render();
}

function onPong(msg) {
  if (typeof msg.t === "number") {
    S.latency = Math.max(0, Date.now() - msg.t);
    renderFooter();
    renderConnection();
  }
}

function onError(msg) {
  const code = String(msg.code ?? "");
  const text = String(msg.message || code || "Something went wrong.");
  S.pendingCell = null;
  switch (code) {
    case "bad_token":
      forgetSeat(S.room);
      S.myMark = null;
      S.seat = "spectator";
      toast("Your seat in this room has expired. Take a seat to play again.", "error", code);
      break;
    case "stale_version":
      wire.send({ type: "sync" });
      toast(text, "error", code);
      break;
    case "already_joined":
      if (S.seat === "pending") S.seat = S.myMark ? "seated" : "spectator";
      toast(text, "error", code);
      break;
    case "room_full":
      if (S.seat === "pending") {
        S.seat = "spectator";
        S.myMark = null;
      }
      stopBotPending();
      toast(text, "error", code);
      break;
    default:
      if (S.seat === "pending") {
        // The join (or seat reclaim) was refused; the token, if any, is kept.
        S.seat = "spectator";
        S.myMark = null;
      }
      stopBotPending();
      toast(text, "error", code);
  }
  render();
}

function stopBotPending() {
  S.botPending = false;
  window.clearTimeout(S.botTimer);
}

// --- actions ---------------------------------------------------------------------------
function takeSeat() {
  const name = requireName("take a seat");
  if (!name) return;
  const token = seatToken(S.room);
  if (wire.send(token ? { type: "join", name, token } : { type: "join", name })) {
    S.seat = "pending";
    render();
  }
}

function playCell(index) {
  const st = S.state;
  if (!canPlay(index)) return;
  if (wire.send({ type: "move", cell: index, version: st.version })) {
    S.pendingCell = index;
    renderBoard();
  }
}

function canPlay(index) {
  const st = S.state;
  return Boolean(
    st && S.welcomed && S.seat === "seated" && st.status === "playing" &&
    st.turn === S.myMark && st.board[index] == null && S.pendingCell === null,
  );
}

function askRematch() {
  wire.send({ type: "rematch" });
}

function askBot() {
  if (wire.send({ type: "bot" })) {
    S.botPending = true;
    window.clearTimeout(S.botTimer);
    S.botTimer = window.setTimeout(() => { S.botPending = false; render(); }, BOT_WAIT_MS);
    render();
  }
}

export function initRoom() {
  el.cells.forEach((cell, i) => cell.addEventListener("click", () => playCell(i)));
  el.join.addEventListener("click", takeSeat);
  el.bot.addEventListener("click", askBot);
  el.rematch.addEventListener("click", askRematch);
  initChat((message) => wire.send(message));
  onNameEnter((event) => {
    if (!S.room) return; // in the lobby, Enter submits the lobby form
    event.preventDefault();
    takeSeat();
  });
  // While a retry waits: click the indicator, or come back online or to the tab.
  const retryNow = () => wire.retryNow();
  el.connection.addEventListener("click", retryNow);
  window.addEventListener("online", retryNow);
  window.addEventListener("offline", renderConnection);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") retryNow();
  });
}

// --- rendering ------------------------------------------------------------------------
function render(previous) {
  renderConnection();
  if (!S.room) return;
  renderStatus();
  renderBoard(previous);
  renderPlayers();
  renderActions();
  const me = seatedMark();
  renderChatForm({ seatedAs: me, name: me ? playerName(me) : "", live: S.welcomed });
  renderFooter();
}

// The mark this page plays, once `joined` confirmed it; else null.
function seatedMark() {
  return S.seat === "seated" ? S.myMark : null;
}

// The mark shown as this page's (also while reclaiming it); else null.
function shownMark() {
  return S.seat !== "spectator" ? S.myMark : null;
}

function renderConnection() {
  const c = el.connection;
  c.dataset.state = S.conn;
  let text;
  if (S.conn === "open") {
    text = S.latency == null ? "Connected" : `Connected · ${S.latency} ms`;
  } else if (S.conn === "connecting") {
    const verb = S.everWelcomed ? "Reconnecting" : "Connecting";
    if (wire.retryAt) {
      const seconds = Math.max(0, Math.ceil((wire.retryAt - Date.now()) / 1000));
      text = navigator.onLine === false
        ? `Offline · retrying in ${seconds}s…`
        : `${verb} in ${seconds}s…`;
    } else {
      text = `${verb}…`;
    }
  } else {
    text = "Offline";
  }
  if (el.connText.textContent !== text) el.connText.textContent = text;
  c.title = wire.retryAt ? "Click to retry now" : "";
  c.classList.toggle("clickable", Boolean(wire.retryAt));
}

function playerName(mark) {
  const p = S.state?.players?.[mark];
  return p ? p.name : mark;
}

function renderStatus() {
  const st = S.state;
  let main = "Connecting…";
  let sub = "";
  let tone = "neutral";
  if (st) {
    const me = seatedMark();
    switch (st.status) {
      case "waiting": {
        const empty = ["X", "O"].filter((m) => !st.players?.[m]);
        if (empty.length === 2) {
          main = "Waiting for players";
          sub = "Take a seat to start a game.";
        } else {
          main = "Waiting for an opponent";
          sub = me ? "Share the link or play the computer." : "One seat is free: take it to play.";
        }
        break;
      }
      case "playing": {
        if (me && st.turn === me) {
          main = "Your turn";
          tone = "go";
        } else if (me) {
          main = `${playerName(st.turn)}'s turn`;
          sub = "Waiting for their move…";
        } else {
          main = `${playerName(st.turn)}'s turn`;
          sub = `${st.turn} to move`;
        }
        const turnPlayer = st.players?.[st.turn];
        if (turnPlayer && !turnPlayer.online && st.turn !== me) {
          sub = `${turnPlayer.name} is offline; the game waits for them.`;
        }
        break;
      }
      case "won":
        main = `${playerName(st.winner)} wins`;
        tone = me ? (st.winner === me ? "win" : "lose") : "win";
        sub = me ? (st.winner === me ? "Nicely played!" : "Better luck next time.") : "Game over";
        break;
      case "draw":
        main = "Draw";
        sub = "Nobody wins this one.";
        tone = "draw";
        break;
      default:
        main = String(st.status);
    }
    if (!S.welcomed) {
      // Cut off: nothing here is current, so the headline says what is (no "Your turn").
      main = S.everWelcomed ? "Reconnecting…" : "Connecting…";
      sub = "Showing the last known board while reconnecting.";
      tone = "neutral";
    }
  }
  el.status.textContent = main;
  el.status.dataset.status = st ? st.status : "";
  el.statusSub.textContent = sub;
  el.statusCard.dataset.tone = tone;
}

function renderBoard(previous) {
  const st = S.state;
  const board = st ? st.board : Array(9).fill(null);
  const line = st && st.status === "won" && Array.isArray(st.line) ? st.line : null;
  const me = seatedMark();
  el.board.dataset.myMark = me || "";
  el.board.dataset.status = st ? st.status : "";
  el.board.dataset.yourTurn = String(Boolean(st && me && S.welcomed && st.status === "playing" && st.turn === me));
  el.board.classList.toggle("stale", !S.welcomed);
  el.cells.forEach((cell, i) => {
    const mark = board[i] === "X" || board[i] === "O" ? board[i] : "";
    if (cell.dataset.mark !== mark) {
      cell.dataset.mark = mark;
      const glyph = cell.querySelector(".cell-glyph");
      glyph.innerHTML = mark ? SVG[mark] : "";
      // Draw animation only for a mark that appeared in a live update.
      cell.classList.toggle("fresh", Boolean(mark && previous));
    }
    const playable = canPlay(i);
    cell.disabled = !playable;
    cell.classList.toggle("playable", playable);
    cell.classList.toggle("pending", S.pendingCell === i);
    const win = Boolean(line && line.includes(i));
    cell.classList.toggle("win", win);
    cell.dataset.win = win ? "true" : "false";
    cell.setAttribute("aria-label", `Cell ${i + 1}${mark ? `, ${mark}` : playable ? ", empty, play here" : ", empty"}`);
  });
  if (line && LINES.some((l) => l.every((v, k) => v === line[k]))) {
    const [a, , c] = line;
    const center = (i) => [50 + (i % 3) * 100, 50 + Math.floor(i / 3) * 100];
    const [x1, y1] = center(a);
    const [x2, y2] = center(c);
    // Stretch a little past the outer cells' centres.
    const dx = (x2 - x1) * 0.18;
    const dy = (y2 - y1) * 0.18;
    el.strikeLine.setAttribute("x1", String(x1 - dx));
    el.strikeLine.setAttribute("y1", String(y1 - dy));
    el.strikeLine.setAttribute("x2", String(x2 + dx));
    el.strikeLine.setAttribute("y2", String(y2 + dy));
    el.strike.dataset.mark = st.winner || "";
    el.strike.classList.add("show");
  } else {
    el.strike.classList.remove("show");
  }
}

// The two player cards and the room facts: you are, audience (spectators), game version.
function renderPlayers() {
  const st = S.state;
  for (const mark of ["X", "O"]) {
    const card = el.players[mark];
    const p = st?.players?.[mark] ?? null;
    // While this page is cut off, nobody's presence is known: neither online nor offline.
    card.dataset.online = !S.welcomed && p ? "unknown" : p && p.online ? "true" : "false";
    card.dataset.empty = p ? "false" : "true";
    card.classList.toggle("me", shownMark() === mark);
    card.classList.toggle("turn", Boolean(st && st.status === "playing" && st.turn === mark));
    card.classList.toggle("winner", Boolean(st && st.status === "won" && st.winner === mark));
    $(".player-name", card).textContent = p ? p.name : "Open seat";
    let meta;
    if (!p) meta = "Waiting for a player";
    else if (!S.welcomed) meta = "Unknown while reconnecting";
    else meta = p.online ? "Online" : "Offline";
    $(".player-meta-text", card).textContent = meta;
    $(".player-bot", card).hidden = !(p && p.bot);
    const rematch = Boolean(st && Array.isArray(st.rematch) && st.rematch.includes(mark));
    $(".player-rematch", card).hidden = !rematch;
  }
  const mine = shownMark();
  el.myMark.textContent = mine ? mine : "Spectator";
  el.myMark.dataset.mark = mine ? mine : "";
  el.myMark.dataset.seat = S.seat;
  el.myMark.title = S.seat === "pending" ? "Reclaiming your seat…" : "";
  const count = st && typeof st.spectators === "number" ? st.spectators : 0;
  el.spectators.textContent = String(count);
  el.spectators.dataset.count = String(count);
  el.spectatorsLabel.textContent = count === 1 ? "spectator" : "spectators";
  el.version.textContent = st ? `v${st.version}` : "v–";
  el.version.dataset.version = st ? String(st.version) : "";
}

function renderActions() {
  const st = S.state;
  const live = S.welcomed;
  const me = seatedMark();
  const seatFree = Boolean(st && (!st.players?.X || !st.players?.O));

  // Take a seat: spectators while a seat is free; otherwise a note that you watch.
  const mayJoin = S.seat !== "seated" && !(S.seat === "pending" && S.myMark);
  el.seatPanel.hidden = !mayJoin || Boolean(st && !seatFree && S.seat !== "pending");
  el.join.disabled = !live || !seatFree || S.seat === "pending";
  el.join.textContent = S.seat === "pending" ? "Joining…" : "Take a seat";
  el.watchNote.hidden = !(mayJoin && st && !seatFree && S.seat !== "pending");

  // Play vs computer: seated, and the other seat is empty.
  const showBot = Boolean(me && st && !st.players?.[other(me)]);
  el.bot.hidden = !showBot;
  el.bot.disabled = !live || S.botPending;
  el.botLabel.textContent = S.botPending ? "Calling the computer…" : "Play vs computer";

  // Rematch: seated, game over.
  const over = Boolean(st && (st.status === "won" || st.status === "draw"));
  const asked = over && Array.isArray(st.rematch) ? st.rematch : [];
  el.rematch.hidden = !(me && over);
  const iAsked = Boolean(me && asked.includes(me));
  const theyAsked = Boolean(me && asked.includes(other(me)));
  el.rematch.disabled = !live || iAsked;
  el.rematch.textContent = iAsked ? "Rematch requested" : theyAsked ? "Accept rematch" : "Rematch";
  el.rematch.classList.toggle("attention", theyAsked && !iAsked);
  let note = "";
  if (over && asked.length) {
    const names = asked.map((m) => (m === me ? "You" : `${playerName(m)} (${m})`));
    note = `${names.join(" and ")} ${asked.length === 1 && names[0] !== "You" ? "wants" : "want"} a rematch`;
    if (iAsked && !theyAsked) note += `; waiting for ${playerName(other(me))}…`;
  }
  el.rematchNote.textContent = note;
  el.rematchNote.hidden = !note;
}

function renderFooter() {
  el.server.textContent = S.server || "—";
  el.latency.textContent = S.latency == null ? "—" : `${S.latency} ms`;
}
