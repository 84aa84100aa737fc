// What this browser remembers (localStorage), under these keys:
//   tictac:name          the name you play under (shared by every room)
//   tictac:token:<room>  the seat token from `joined` or `matched`, used to reclaim the seat
//   tictac:mark:<room>   the mark that token holds (shown while reconnecting)
// Without storage (private mode, blocked) the page keeps working and forgets.

const KEY_NAME = "tictac:name";
const keyToken = (room) => `tictac:token:${room}`;
const keyMark = (room) => `tictac:mark:${room}`;

function get(key) {
  try { return window.localStorage.getItem(key); } catch { return null; }
}

function set(key, value) {
  try { window.localStorage.setItem(key, value); } catch { /* private mode: keep going */ }
}

function remove(key) {
  try { window.localStorage.removeItem(key); } catch { /* ignore */ }
}

export const savedName = () => get(KEY_NAME) || "";
export const rememberName = (name) => set(KEY_NAME, name);

export const seatToken = (room) => get(keyToken(room));
export const seatMark = (room) => get(keyMark(room));

// `token` null keeps the stored token (a `joined` that reclaimed a seat may carry none).
export function saveSeat(room, mark, token) {
  if (token !== null) set(keyToken(room), token);
  set(keyMark(room), mark);
}

export function forgetSeat(room) {
  remove(keyToken(room));
  remove(keyMark(room));
}
