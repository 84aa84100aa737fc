// The wire: a WebSocket to /ws/game/<room> that comes back by itself (docs/protocol.md).
//
// The page opens two, both a Wire: the room socket (room.js) and, only while quick
// match is searching, a socket to the lobby room (lobby.js). A Wire
//   - builds the URL: ws:// or wss:// like the page, /ws/game/<room>;
//   - sends JSON, only while the socket is open (send() says whether it went out);
//   - hands every text frame holding a JSON object to the handler registered for its
//     `type` with on(); anything else (relay payloads, types nobody handles) is dropped;
//   - reconnects after every close it did not ask for, after retryDelay(code, attempt).
//     1012 (the replica is draining: a deploy, a scale-in) is such a close, like 1011
//     and 1006: any replica will do, and the owner rejoins on the next `welcome` (the
//     room view sends `join` with its seat token, quick match asks again). The owner's
//     retryDelay decides about 1008 (flooding: do not come straight back);
//   - optionally gives up on a handshake that hangs, and, once welcomed, pings to
//     notice a half-open socket (nothing at all heard back for a while).
// Only the newest socket of a Wire counts: events of one it replaced, dropped or
// closed are ignored.

export function wsUrl(room) {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${window.location.host}/ws/game/${encodeURIComponent(room)}`;
}

// Full jitter: a delay uniform in [floorMs, floorMs + min(capMs, baseMs * 2^attempt)].
export function jitteredBackoff({ floorMs = 0, baseMs, capMs }) {
  return (attempt) => floorMs + Math.random() * Math.min(capMs, baseMs * 2 ** attempt);
}

const ATTEMPT_MAX = 30; // the backoff exponent stops growing here
const noop = () => {};

export class Wire {
  room = null; // the room kept open; null when closed on purpose (no reconnect)
  attempt = 0; // backoff exponent: reset by open() and welcomed()
  retryAt = 0; // epoch ms of the next attempt while waiting for it, else 0

  #options;
  #handlers = new Map();
  #ws = null; // the live socket
  #retryTimer = 0;
  #pingTimer = 0;
  #lastHeard = 0; // epoch ms of the last frame received
  #unansweredSince = 0; // epoch ms of the oldest ping sent after lastHeard

  // retryDelay(code, attempt): ms before reconnecting after a close with that code.
  // handshakeTimeoutMs: give up on a socket still connecting after this long (0: never).
  // pingEveryMs / pongTimeoutMs: once welcomed, ping this often; drop the socket when
  //   nothing came back this long after a ping (0: no pings).
  // onConnecting(): a new socket is on its way.
  // onDown(code): the socket is gone (closed by the server or the network, or dropped
  //   as unresponsive: code 1006); a retry is scheduled right after.
  // onRetry(): a retry is scheduled (retryAt says when).
  constructor({
    retryDelay,
    handshakeTimeoutMs = 0,
    pingEveryMs = 0,
    pongTimeoutMs = 0,
    onConnecting = noop,
    onDown = noop,
    onRetry = noop,
  }) {
    this.#options = {
      retryDelay, handshakeTimeoutMs, pingEveryMs, pongTimeoutMs, onConnecting, onDown, onRetry,
    };
  }

  // handler(msg) for every frame whose `type` is `type`. Returns the wire, for chaining.
  on(type, handler) {
    this.#handlers.set(type, handler);
    return this;
  }

  get isOpen() {
    return this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
  }

  // Connect to `room` and keep reconnecting until close().
  open(room) {
    this.room = room;
    this.attempt = 0;
    this.#connect();
  }

  // Close for good: 1000, no reconnect.
  close(reason) {
    this.#clearRetry();
    this.#stopPing();
    const ws = this.#ws;
    this.#ws = null;
    this.room = null;
    if (ws) {
      try { ws.close(1000, reason); } catch { /* already gone */ }
    }
  }

  send(message) {
    if (!this.isOpen) return false;
    this.#ws.send(JSON.stringify(message));
    return true;
  }

  // The server greeted this socket (`welcome`): the backoff starts over, pings start.
  welcomed() {
    this.attempt = 0;
    if (this.#options.pingEveryMs) this.#startPing();
  }

  // While waiting for a retry: try now (a click, the browser back online or visible).
  retryNow() {
    if (this.room !== null && this.retryAt) this.#connect();
  }

  #connect() {
    this.#clearRetry();
    if (this.room === null) return;
    let ws;
    try {
      ws = new WebSocket(wsUrl(this.room));
    } catch {
      this.#scheduleRetry(1011);
      return;
    }
    this.#ws = ws;
    this.#options.onConnecting();
    const { handshakeTimeoutMs } = this.#options;
    const handshake = handshakeTimeoutMs
      ? window.setTimeout(() => {
        if (ws === this.#ws && ws.readyState === WebSocket.CONNECTING) this.#drop(1006);
      }, handshakeTimeoutMs)
      : 0;
    ws.addEventListener("open", () => {
      window.clearTimeout(handshake);
      this.#lastHeard = Date.now();
    });
    ws.addEventListener("message", (event) => {
      if (ws !== this.#ws) return;
      this.#lastHeard = Date.now();
      this.#dispatch(event.data);
    });
    ws.addEventListener("close", (event) => {
      window.clearTimeout(handshake);
      if (ws !== this.#ws) return; // replaced, dropped or closed on purpose
      this.#ws = null;
      this.#stopPing();
      this.#options.onDown(event.code);
      this.#scheduleRetry(event.code);
    });
  }

  #dispatch(data) {
    if (typeof data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object") return;
    const handler = this.#handlers.get(msg.type);
    if (handler) handler(msg);
  }

  // Give up on a socket that is stuck or silent without waiting for a close
  // handshake that may never finish, and schedule the next attempt.
  #drop(code) {
    const ws = this.#ws;
    this.#ws = null;
    this.#stopPing();
    this.#options.onDown(code);
    if (ws) {
      try { ws.close(4000, "unresponsive"); } catch { /* already gone */ }
    }
    this.#scheduleRetry(code);
  }

  #scheduleRetry(code) {
    this.#clearRetry();
    if (this.room === null) return;
    const delay = this.#options.retryDelay(code, this.attempt);
    this.attempt = Math.min(this.attempt + 1, ATTEMPT_MAX);
    this.retryAt = Date.now() + delay;
    this.#retryTimer = window.setTimeout(() => this.#connect(), delay);
    this.#options.onRetry();
  }

  #clearRetry() {
    window.clearTimeout(this.#retryTimer);
    this.#retryTimer = 0;
    this.retryAt = 0;
  }

  #startPing() {
    this.#stopPing();
    this.#unansweredSince = 0;
    const { pingEveryMs, pongTimeoutMs } = this.#options;
    const tick = () => {
      const now = Date.now();
      if (this.#unansweredSince && this.#lastHeard < this.#unansweredSince) {
        // Nothing at all came back since that ping: a half-open socket.
        if (now - this.#unansweredSince >= pongTimeoutMs) {
          this.#drop(1006);
          return;
        }
      } else {
        this.#unansweredSince = now;
      }
      this.send({ type: "ping", t: now });
    };
    tick();
    this.#pingTimer = window.setInterval(tick, pingEveryMs);
  }

  #stopPing() {
    window.clearInterval(this.#pingTimer);
    this.#pingTimer = 0;
  }
}
