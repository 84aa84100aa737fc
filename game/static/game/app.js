// Tic-tac-toe live: the page that plays protocol version 1 (see docs/protocol.md).
//
// Room URLs use the query string: /?room=<code>, e.g. https://host/?room=k7m2qp.
// Opening such a link goes straight into the room as a spectator (and back into
// your seat if this browser holds a seat token for it). The lobby is plain "/".
//
// Local storage keys:
//   tictac:name          the name you play under (shared by every room)
//   tictac:token:<room>  the seat token from `joined` or `matched`, used to reclaim the seat
//   tictac:mark:<room>   the mark that token holds (shown while reconnecting)
//
// Quick match (lobby): a second socket to /ws/game/lobby sends `quickmatch` with
// the stored name, gets `matching` (its ticket), then `matched` with a room and a
// seat token; the page stores the token and enters that room, where the normal
// reconnect logic joins with it. The leaderboard panel reads GET /api/leaderboard
// on load, after every finished game (results are counted by a background job, so
// it asks again a little later too) and every half minute while visible.
//
// Plain ES2020, no framework, no build step. All user-supplied text reaches the
// DOM through textContent only.
"use strict";

(() => {
  // --- constants ----------------------------------------------------------------
  const ROOM_RE = /^[A-Za-z0-9_-]{1,32}$/;
  // Python's str.isprintable(): no control/format/unassigned characters and no
  // separators except the ASCII space.
  const PRINTABLE_RE = /^(?:[^\p{C}\p{Z}]| )+$/u;
  const NAME_MAX = 32;
  const CHAT_MAX = 280;
  const KEY_NAME = "tictac:name";
  const keyToken = (room) => `tictac:token:${room}`;
  const keyMark = (room) => `tictac:mark:${room}`;

  const BACKOFF_BASE_MS = 500;
  const BACKOFF_FACTOR = 2;
  const BACKOFF_CAP_MS = 10_000;
  const POLICY_DELAY_MIN_MS = 15_000; // close 1008 (flooding): do not come straight back
  const POLICY_DELAY_MAX_MS = 30_000;
  const HANDSHAKE_TIMEOUT_MS = 10_000;
  const PING_EVERY_MS = 20_000;
  const PONG_TIMEOUT_MS = 30_000; // a ping unanswered this long: the socket is dead
  const TOAST_MS = 4_000;
  const LOBBY_ROOM = "lobby"; // the room quick-match sockets wait in
  const QUICK_RETRY_MIN_MS = 500;
  const QUICK_RETRY_MAX_MS = 5_000;
  const LEADERBOARD_SIZE = 10;
  const LEADERBOARD_URL = `/api/leaderboard?limit=${LEADERBOARD_SIZE}`;
  const LEADERBOARD_REFRESH_MS = 30_000;
  // After a game ends: the result is counted by a job, a moment later.
  const LEADERBOARD_AFTER_GAME_MS = [300, 1_500, 4_000];
  const CHAT_KEEP = 200;
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

  // --- small helpers -------------------------------------------------------------
  const $ = (selector, root = document) => root.querySelector(selector);
  const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);
  const codePoints = (text) => [...text].length;
  const other = (mark) => (mark === "X" ? "O" : "X");

  const store = {
    get(key) {
      try { return window.localStorage.getItem(key); } catch { return null; }
    },
    set(key, value) {
      try { window.localStorage.setItem(key, value); } catch { /* private mode: keep going */ }
    },
    remove(key) {
      try { window.localStorage.removeItem(key); } catch { /* ignore */ }
    },
  };

  function validName(name) {
    const n = codePoints(name);
    return n >= 1 && n <= NAME_MAX && PRINTABLE_RE.test(name);
  }

  function randomRoomCode(length = 6) {
    const alphabet = "abcdefghjkmnpqrstuvwxyz23456789"; // no 0/o, 1/l/i
    const bytes = new Uint8Array(length);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
  }

  function roomFromUrl() {
    const room = new URLSearchParams(window.location.search).get("room");
    return room === null ? null : room;
  }

  function roomUrl(room) {
    const url = new URL(window.location.href);
    url.search = `?room=${encodeURIComponent(room)}`;
    url.hash = "";
    return url.toString();
  }

  function wsUrl(room) {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${window.location.host}/ws/game/${encodeURIComponent(room)}`;
  }

  // --- elements ------------------------------------------------------------------
  const el = {
    lobby: $("#lobby"),
    roomView: $("#room"),
    lobbyForm: $("#lobby-form"),
    roomInput: byTestId("room-input"),
    roomHint: $("#room-hint"),
    randomRoom: $("#random-room"),
    nameField: $("#name-field"),
    nameInput: byTestId("name-input"),
    nameHint: $("#name-hint"),
    nameSlotLobby: $("#name-slot-lobby"),
    nameSlotRoom: $("#name-slot-room"),
    enterRoom: byTestId("enter-room"),
    roomChip: $("#room-chip"),
    roomCode: byTestId("room-code"),
    copyLink: byTestId("copy-link"),
    leave: $("#leave"),
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
    chatLog: byTestId("chat-log"),
    chatEmpty: $("#chat-empty"),
    chatForm: $("#chat-form"),
    chatInput: byTestId("chat-input"),
    chatSend: byTestId("chat-send"),
    chatCount: $("#chat-count"),
    server: byTestId("server"),
    latency: byTestId("latency"),
    toasts: $("#toasts"),
    quick: $("#quick"),
    quickButton: byTestId("quick-match"),
    quickLabel: $('[data-testid="quick-match"] .quick-label'),
    quickStatus: byTestId("quick-match-status"),
    quickText: $('[data-testid="quick-match-status"] .quick-text'),
    leaderboard: byTestId("leaderboard"),
    leaderboardRows: $("#leaderboard-rows"),
    leaderboardEmpty: $("#leaderboard-empty"),
    leaderboardSlotLobby: $("#leaderboard-slot-lobby"),
    leaderboardSlotRoom: $("#leaderboard-slot-room"),
  };

  // --- the whole client state -------------------------------------------------------
  const S = {
    room: null, // current room code, null in the lobby
    ws: null, // the live socket (older sockets are ignored once replaced)
    conn: "closed", // open | connecting | closed  (the indicator's data-state)
    welcomed: false,
    everWelcomed: false, // in this room: decides "Connecting" vs "Reconnecting"
    attempt: 0, // backoff exponent, reset by welcome
    retryAt: 0, // epoch ms of the next attempt while waiting, else 0
    retryTimer: 0,
    countdownTimer: 0,
    pingTimer: 0,
    lastHeard: 0, // epoch ms of the last frame received
    unansweredSince: 0, // epoch ms of the oldest ping sent after lastHeard
    server: "",
    latency: null,
    state: null, // the accepted `state` with the highest version
    myMark: null, // "X" | "O" | null
    seat: "spectator", // spectator | pending (join sent) | seated (joined received)
    chat: [],
    pendingCell: null,
    botPending: false,
    botTimer: 0,
  };

  // Quick match: its own socket, only while searching.
  const Q = {
    searching: false,
    ws: null,
    name: "",
    ticket: null, // from `matching`
    attempt: 0, // reconnects while searching
    retryTimer: 0,
  };

  // The leaderboard panel.
  const LB = {
    rows: null, // null until the first answer
    failed: false,
    seq: 0, // answers to older requests are ignored
    followups: [], // timers after a finished game
  };

  // --- connection -------------------------------------------------------------------
  function send(message) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    S.ws.send(JSON.stringify(message));
    return true;
  }

  function connect() {
    clearRetry();
    if (!S.room) return;
    let ws;
    try {
      ws = new WebSocket(wsUrl(S.room));
    } catch {
      scheduleReconnect(1011);
      return;
    }
    S.ws = ws;
    S.welcomed = false;
    setConn("connecting");
    const handshake = window.setTimeout(() => {
      if (ws === S.ws && ws.readyState === WebSocket.CONNECTING) dropSocket(1006);
    }, HANDSHAKE_TIMEOUT_MS);
    ws.addEventListener("open", () => {
      window.clearTimeout(handshake);
      S.lastHeard = Date.now();
    });
    ws.addEventListener("message", (event) => {
      if (ws !== S.ws) return;
      S.lastHeard = Date.now();
      onFrame(event.data);
    });
    ws.addEventListener("close", (event) => {
      window.clearTimeout(handshake);
      if (ws !== S.ws) return; // replaced, dropped or closed on purpose
      S.ws = null;
      S.welcomed = false;
      stopPing();
      if (event.code === 1008) {
        toast("The server closed the connection (too many messages). Reconnecting shortly.", "error");
      }
      scheduleReconnect(event.code);
    });
  }

  // Give up on a socket that is stuck or silent without waiting for a close
  // handshake that may never finish, and schedule the next attempt.
  function dropSocket(code) {
    const ws = S.ws;
    S.ws = null;
    S.welcomed = false;
    stopPing();
    if (ws) {
      try { ws.close(4000, "unresponsive"); } catch { /* already gone */ }
    }
    scheduleReconnect(code);
  }

  function disconnect() {
    clearRetry();
    stopPing();
    const ws = S.ws;
    S.ws = null;
    S.welcomed = false;
    if (ws) {
      try { ws.close(1000, "leaving"); } catch { /* already gone */ }
    }
    setConn("closed");
  }

  function backoffDelay(code) {
    if (code === 1008) {
      return POLICY_DELAY_MIN_MS + Math.random() * (POLICY_DELAY_MAX_MS - POLICY_DELAY_MIN_MS);
    }
    // Full jitter: uniform in [0, min(cap, base * factor^attempt)].
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * BACKOFF_FACTOR ** S.attempt);
    return Math.random() * ceiling;
  }

  function scheduleReconnect(code) {
    clearRetry();
    if (!S.room) return;
    const delay = backoffDelay(code);
    S.attempt = Math.min(S.attempt + 1, 30);
    S.retryAt = Date.now() + delay;
    S.pendingCell = null;
    S.retryTimer = window.setTimeout(connect, delay);
    S.countdownTimer = window.setInterval(renderConnection, 250);
    setConn("connecting");
  }

  function clearRetry() {
    window.clearTimeout(S.retryTimer);
    window.clearInterval(S.countdownTimer);
    S.retryTimer = 0;
    S.countdownTimer = 0;
    S.retryAt = 0;
  }

  function retryNow() {
    if (S.room && S.retryAt) connect();
  }

  function startPing() {
    stopPing();
    S.unansweredSince = 0;
    const tick = () => {
      const now = Date.now();
      if (S.unansweredSince && S.lastHeard < S.unansweredSince) {
        // Nothing at all came back since that ping: a half-open socket.
        if (now - S.unansweredSince >= PONG_TIMEOUT_MS) {
          dropSocket(1006);
          return;
        }
      } else {
        S.unansweredSince = now;
      }
      send({ type: "ping", t: now });
    };
    tick();
    S.pingTimer = window.setInterval(tick, PING_EVERY_MS);
  }

  function stopPing() {
    window.clearInterval(S.pingTimer);
    S.pingTimer = 0;
  }

  function setConn(conn) {
    S.conn = conn;
    render();
  }

  // --- incoming frames -----------------------------------------------------------------
  function onFrame(data) {
    if (typeof data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object") return;
    switch (msg.type) {
      case "welcome": return onWelcome(msg);
      case "state": return onState(msg);
      case "joined": return onJoined(msg);
      case "chat": return onChat(msg);
      case "pong": return onPong(msg);
      case "error": return onError(msg);
      default: return undefined; // relay payloads and future additions
    }
  }

  function onWelcome(msg) {
    if (msg.room && msg.room !== S.room) return;
    clearRetry();
    S.attempt = 0;
    S.welcomed = true;
    S.everWelcomed = true;
    S.server = String(msg.server ?? "");
    S.conn = "open";
    startPing();
    const token = store.get(keyToken(S.room));
    if (token) {
      S.seat = "pending";
      const stored = store.get(KEY_NAME) || "";
      const name = validName(currentName()) ? currentName() : validName(stored) ? stored : "Player";
      send({ type: "join", name, token });
    } else if (S.seat !== "spectator") {
      S.seat = "spectator";
      S.myMark = null;
    }
    render();
  }

  function onState(msg) {
    if (msg.room && msg.room !== S.room) return;
    if (typeof msg.version !== "number" || !Array.isArray(msg.board)) return;
    // Keep the highest version seen in this room (across reconnects too), the
    // later one on a tie: broadcasts from different replicas can arrive out of order.
    if (S.state && msg.version < S.state.version) return;
    const previous = S.state;
    S.state = msg;
    S.pendingCell = null;
    if (previous && previous.status === "playing" && (msg.status === "won" || msg.status === "draw")) {
      refreshLeaderboardAfterGame();
    }
    if (S.botPending && msg.players && S.myMark && msg.players[other(S.myMark)]) {
      stopBotPending();
    }
    render(previous);
  }

  function onJoined(msg) {
    if (msg.mark !== "X" && msg.mark !== "O") return;
    const wasSeated = S.seat === "seated" || store.get(keyToken(S.room));
    S.myMark = msg.mark;
    S.seat = "seated";
    if (typeof msg.token === "string") store.set(keyToken(S.room), msg.token);
    store.set(keyMark(S.room), msg.mark);
    if (!wasSeated) {
      const alone = !S.state?.players?.[other(msg.mark)];
      toast(`You play ${msg.mark}.${alone ? " Share the link to invite an opponent." : ""}`, "info");
    }
    render();
  }

  function onChat(msg) {
    S.chat.push({
      mark: msg.mark === "X" || msg.mark === "O" ? msg.mark : "",
      name: String(msg.name ?? ""),
      text: String(msg.text ?? ""),
    });
    if (S.chat.length > CHAT_KEEP) S.chat.splice(0, S.chat.length - CHAT_KEEP);
    renderChat(true);
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
        forgetSeat();
        toast("Your seat in this room has expired. Take a seat to play again.", "error", code);
        break;
      case "stale_version":
        send({ type: "sync" });
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

  function forgetSeat() {
    if (S.room) {
      store.remove(keyToken(S.room));
      store.remove(keyMark(S.room));
    }
    S.myMark = null;
    S.seat = "spectator";
  }

  function stopBotPending() {
    S.botPending = false;
    window.clearTimeout(S.botTimer);
  }

  // --- actions ---------------------------------------------------------------------------
  function currentName() {
    return el.nameInput.value.trim();
  }

  function checkName() {
    const name = currentName();
    const ok = validName(name);
    el.nameField.classList.toggle("invalid", !ok && name.length > 0);
    el.nameHint.textContent = ok || !name
      ? "1–32 characters, remembered on this device."
      : "Use 1–32 printable characters.";
    return ok ? name : null;
  }

  function takeSeat() {
    const name = checkName();
    if (!name) {
      el.nameField.classList.add("invalid");
      el.nameHint.textContent = "Enter a name (1–32 characters) to take a seat.";
      el.nameInput.focus();
      return;
    }
    store.set(KEY_NAME, name);
    const token = store.get(keyToken(S.room));
    if (send(token ? { type: "join", name, token } : { type: "join", name })) {
      S.seat = "pending";
      render();
    }
  }

  function playCell(index) {
    const st = S.state;
    if (!canPlay(index)) return;
    if (send({ type: "move", cell: index, version: st.version })) {
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
    send({ type: "rematch" });
  }

  function askBot() {
    if (send({ type: "bot" })) {
      S.botPending = true;
      window.clearTimeout(S.botTimer);
      S.botTimer = window.setTimeout(() => { S.botPending = false; render(); }, 8000);
      render();
    }
  }

  function sendChat(event) {
    event.preventDefault();
    const text = el.chatInput.value.trim();
    const n = codePoints(text);
    if (n < 1) return;
    if (n > CHAT_MAX) {
      toast(`Messages are at most ${CHAT_MAX} characters.`, "error", "bad_message");
      return;
    }
    if (send({ type: "chat", text })) {
      el.chatInput.value = "";
      renderChatCount();
    } else {
      toast("Not connected: the message was not sent.", "error");
    }
  }

  async function copyLink() {
    const url = roomUrl(S.room);
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

  // --- navigation -----------------------------------------------------------------------
  function enterRoom(room, { push = true } = {}) {
    if (S.room === room) return;
    stopQuickMatch();
    disconnect();
    S.room = room;
    S.state = null;
    S.server = "";
    S.latency = null;
    S.chat = [];
    S.attempt = 0;
    S.everWelcomed = false;
    S.pendingCell = null;
    stopBotPending();
    const token = store.get(keyToken(room));
    const mark = store.get(keyMark(room));
    S.myMark = token && (mark === "X" || mark === "O") ? mark : null;
    S.seat = token ? "pending" : "spectator";
    if (push) window.history.pushState({ room }, "", roomUrl(room));
    document.title = `Room ${room} · Tictac live`;
    el.roomCode.textContent = room;
    el.nameSlotRoom.append(el.nameField);
    el.leaderboardSlotRoom.append(el.leaderboard);
    showView("room");
    renderChat(false);
    connect();
  }

  function leaveRoom({ push = true } = {}) {
    const wasInRoom = S.room !== null;
    disconnect();
    S.room = null;
    S.state = null;
    S.myMark = null;
    S.seat = "spectator";
    S.chat = [];
    if (push) window.history.pushState({}, "", window.location.pathname);
    document.title = "Tictac live · tic-tac-toe with friends";
    el.nameSlotLobby.append(el.nameField);
    el.leaderboardSlotLobby.append(el.leaderboard);
    showView("lobby");
    render();
    if (wasInRoom) loadLeaderboard();
  }

  function showView(view) {
    el.lobby.hidden = view !== "lobby";
    el.roomView.hidden = view !== "room";
    el.roomChip.hidden = view !== "room";
    el.connection.hidden = view !== "room";
    document.body.dataset.view = view;
  }

  function route({ push = false } = {}) {
    const room = roomFromUrl();
    if (room !== null && ROOM_RE.test(room)) {
      enterRoom(room, { push });
      return;
    }
    leaveRoom({ push });
    if (room !== null) {
      el.roomInput.value = room.slice(0, 64);
      validateRoomInput(true);
    }
  }

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

  // --- rendering ------------------------------------------------------------------------
  function render(previous) {
    renderConnection();
    if (!S.room) return;
    renderStatus();
    renderBoard(previous);
    renderPlayers();
    renderActions();
    renderChatForm();
    renderFooter();
  }

  function renderConnection() {
    const c = el.connection;
    c.dataset.state = S.conn;
    let text;
    if (S.conn === "open") {
      text = S.latency == null ? "Connected" : `Connected · ${S.latency} ms`;
    } else if (S.conn === "connecting") {
      const verb = S.everWelcomed ? "Reconnecting" : "Connecting";
      if (S.retryAt) {
        const seconds = Math.max(0, Math.ceil((S.retryAt - Date.now()) / 1000));
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
    c.title = S.retryAt ? "Click to retry now" : "";
    c.classList.toggle("clickable", Boolean(S.retryAt));
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
      const me = S.seat === "seated" ? S.myMark : null;
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
      if (!S.welcomed) sub = "Showing the last known board while reconnecting.";
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
    const me = S.seat === "seated" ? S.myMark : null;
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

  function renderPlayers() {
    const st = S.state;
    for (const mark of ["X", "O"]) {
      const card = el.players[mark];
      const p = st?.players?.[mark] ?? null;
      card.dataset.online = p && p.online ? "true" : "false";
      card.dataset.empty = p ? "false" : "true";
      card.classList.toggle("me", S.myMark === mark && S.seat !== "spectator");
      card.classList.toggle("turn", Boolean(st && st.status === "playing" && st.turn === mark));
      card.classList.toggle("winner", Boolean(st && st.status === "won" && st.winner === mark));
      $(".player-name", card).textContent = p ? p.name : "Open seat";
      let meta;
      if (!p) meta = "Waiting for a player";
      else meta = p.online ? "Online" : "Offline";
      $(".player-meta-text", card).textContent = meta;
      $(".player-bot", card).hidden = !(p && p.bot);
      const rematch = Boolean(st && Array.isArray(st.rematch) && st.rematch.includes(mark));
      $(".player-rematch", card).hidden = !rematch;
    }
    const mine = S.seat !== "spectator" && S.myMark;
    el.myMark.textContent = mine ? S.myMark : "Spectator";
    el.myMark.dataset.mark = mine ? S.myMark : "";
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
    const me = S.seat === "seated" ? S.myMark : null;
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

  function renderChatForm() {
    const me = S.seat === "seated" ? S.myMark : null;
    const ok = Boolean(me && S.welcomed);
    el.chatInput.disabled = !ok;
    el.chatSend.disabled = !ok;
    el.chatInput.placeholder = me ? `Message as ${playerName(me)}…` : "Take a seat to chat";
  }

  function renderChatCount() {
    const n = codePoints(el.chatInput.value);
    el.chatCount.textContent = n > CHAT_MAX - 40 ? `${CHAT_MAX - n}` : "";
    el.chatCount.classList.toggle("over", n > CHAT_MAX);
  }

  function renderChat(appended) {
    const log = el.chatLog;
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    if (!appended) log.replaceChildren();
    const start = appended ? log.children.length : 0;
    // A full rerender when entries were trimmed from the front.
    if (appended && S.chat.length < log.children.length) return renderChat(false);
    for (const entry of S.chat.slice(start)) {
      const li = document.createElement("li");
      li.className = "chat-line";
      li.dataset.mark = entry.mark;
      if (entry.mark && entry.mark === S.myMark && S.seat !== "spectator") li.classList.add("mine");
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
    el.chatEmpty.hidden = S.chat.length > 0;
    if (!appended || nearBottom) log.scrollTop = log.scrollHeight;
    return undefined;
  }

  function renderFooter() {
    el.server.textContent = S.server || "—";
    el.latency.textContent = S.latency == null ? "—" : `${S.latency} ms`;
  }

  // --- quick match -----------------------------------------------------------------------
  function toggleQuickMatch() {
    if (Q.searching) {
      stopQuickMatch();
      return;
    }
    const name = checkName();
    if (!name) {
      el.nameField.classList.add("invalid");
      el.nameHint.textContent = "Enter a name (1–32 characters) to play a quick match.";
      el.nameInput.focus();
      return;
    }
    store.set(KEY_NAME, name);
    Q.searching = true;
    Q.name = name;
    Q.ticket = null;
    Q.attempt = 0;
    openQuickSocket();
    renderQuickMatch();
  }

  function openQuickSocket() {
    window.clearTimeout(Q.retryTimer);
    Q.retryTimer = 0;
    let ws;
    try {
      ws = new WebSocket(wsUrl(LOBBY_ROOM));
    } catch {
      scheduleQuickRetry();
      return;
    }
    Q.ws = ws;
    ws.addEventListener("message", (event) => {
      if (ws === Q.ws) onQuickFrame(event.data);
    });
    ws.addEventListener("close", () => {
      if (ws !== Q.ws) return; // stopped or replaced on purpose
      Q.ws = null;
      // The server drops a waiting ticket with its socket: ask again on a new one.
      if (Q.searching) scheduleQuickRetry();
    });
  }

  function scheduleQuickRetry() {
    Q.ticket = null;
    const ceiling = Math.min(QUICK_RETRY_MAX_MS, QUICK_RETRY_MIN_MS * 2 ** Q.attempt);
    Q.attempt = Math.min(Q.attempt + 1, 30);
    Q.retryTimer = window.setTimeout(openQuickSocket, QUICK_RETRY_MIN_MS / 2 + Math.random() * ceiling);
    renderQuickMatch();
  }

  function onQuickFrame(data) {
    if (typeof data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object") return;
    switch (msg.type) {
      case "welcome":
        Q.attempt = 0;
        Q.ws.send(JSON.stringify({ type: "quickmatch", name: Q.name }));
        break;
      case "matching":
        Q.ticket = typeof msg.ticket === "number" ? msg.ticket : null;
        renderQuickMatch();
        break;
      case "matched": {
        const room = String(msg.room ?? "");
        if (!ROOM_RE.test(room) || (msg.mark !== "X" && msg.mark !== "O") || typeof msg.token !== "string") {
          return;
        }
        store.set(keyToken(room), msg.token);
        store.set(keyMark(room), msg.mark);
        stopQuickMatch();
        const opponent = typeof msg.opponent === "string" && msg.opponent ? msg.opponent : "an opponent";
        toast(`Matched with ${opponent}. You play ${msg.mark}.`, "success");
        enterRoom(room); // the stored token takes the seat on welcome
        break;
      }
      case "error":
        stopQuickMatch();
        toast(String(msg.message || msg.code || "Quick match failed."), "error", String(msg.code ?? ""));
        break;
      default:
        break; // the lobby room's own state and presence
    }
  }

  function stopQuickMatch() {
    window.clearTimeout(Q.retryTimer);
    Q.retryTimer = 0;
    const ws = Q.ws;
    Q.ws = null;
    Q.searching = false;
    Q.ticket = null;
    if (ws) {
      try { ws.close(1000, "done"); } catch { /* already gone */ }
    }
    renderQuickMatch();
  }

  function renderQuickMatch() {
    const state = !Q.searching ? "idle" : Q.ws && Q.ws.readyState === WebSocket.OPEN ? "searching" : "connecting";
    el.quick.dataset.state = state;
    el.quickStatus.hidden = !Q.searching;
    el.quickStatus.dataset.ticket = Q.ticket == null ? "" : String(Q.ticket);
    el.quickText.textContent = "Looking for an opponent…";
    el.quickLabel.textContent = Q.searching ? "Cancel" : "Quick match";
    el.quickButton.setAttribute("aria-pressed", String(Q.searching));
  }

  // --- leaderboard -------------------------------------------------------------------------
  async function loadLeaderboard() {
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

  function refreshLeaderboardAfterGame() {
    LB.followups.forEach((timer) => window.clearTimeout(timer));
    LB.followups = LEADERBOARD_AFTER_GAME_MS.map((delay) => window.setTimeout(loadLeaderboard, delay));
  }

  function count(value) {
    return Number.isFinite(value) ? String(value) : "0";
  }

  function renderLeaderboard() {
    const rows = LB.rows;
    el.leaderboard.dataset.state = rows === null ? (LB.failed ? "error" : "loading") : rows.length ? "ready" : "empty";
    const me = (store.get(KEY_NAME) || "").trim();
    el.leaderboardRows.replaceChildren(...(rows || []).map((row, index) => {
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
    el.leaderboardEmpty.textContent = empty;
    el.leaderboardEmpty.hidden = !empty;
  }

  // --- toasts ---------------------------------------------------------------------------
  function toast(text, kind = "info", code = "") {
    const item = document.createElement("div");
    item.className = `toast toast-${kind}`;
    item.setAttribute("role", kind === "error" ? "alert" : "status");
    item.dataset.testid = "toast";
    if (code) item.dataset.code = code;
    item.textContent = text;
    el.toasts.append(item);
    while (el.toasts.children.length > 3) el.toasts.firstElementChild.remove();
    window.setTimeout(() => {
      item.classList.add("leaving");
      window.setTimeout(() => item.remove(), 300);
    }, TOAST_MS);
  }

  // --- wiring -----------------------------------------------------------------------------
  function wire() {
    el.nameInput.value = store.get(KEY_NAME) || "";
    el.nameInput.maxLength = 64; // code points are checked in JS; leave room for emoji
    el.nameInput.addEventListener("input", () => {
      const name = checkName();
      if (name) store.set(KEY_NAME, name);
    });
    el.nameInput.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && S.room) {
        event.preventDefault();
        takeSeat();
      }
    });

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
        el.nameInput.focus();
        return;
      }
      if (!room) {
        el.roomInput.focus();
        return;
      }
      if (nameRaw) store.set(KEY_NAME, nameRaw);
      enterRoom(room);
    });

    el.cells.forEach((cell, i) => cell.addEventListener("click", () => playCell(i)));
    el.join.addEventListener("click", takeSeat);
    el.bot.addEventListener("click", askBot);
    el.rematch.addEventListener("click", askRematch);
    el.chatForm.addEventListener("submit", sendChat);
    el.chatInput.maxLength = CHAT_MAX * 2;
    el.chatInput.addEventListener("input", renderChatCount);
    el.copyLink.addEventListener("click", copyLink);
    el.quickButton.addEventListener("click", toggleQuickMatch);
    el.leave.addEventListener("click", () => leaveRoom());
    el.connection.addEventListener("click", retryNow);
    $("#brand").addEventListener("click", (event) => {
      event.preventDefault();
      if (S.room) leaveRoom();
    });

    window.addEventListener("popstate", () => route());
    window.addEventListener("online", retryNow);
    window.addEventListener("offline", renderConnection);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") {
        retryNow();
        loadLeaderboard();
      }
    });
    window.setInterval(() => {
      if (document.visibilityState === "visible") loadLeaderboard();
    }, LEADERBOARD_REFRESH_MS);
  }

  wire();
  route();
  renderQuickMatch();
  loadLeaderboard();
})();
