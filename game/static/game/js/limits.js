// What the server accepts (docs/protocol.md), checked here before anything is sent.

export const ROOM_RE = /^[A-Za-z0-9_-]{1,32}$/;
export const CHAT_MAX = 280; // code points
const NAME_MAX = 32; // code points
// Python's str.isprintable(): no control/format/unassigned characters and no
// separators except the ASCII space.
const PRINTABLE_RE = /^(?:[^\p{C}\p{Z}]| )+$/u;

// The server counts characters as code points, not UTF-16 units: an emoji is one.
export const codePoints = (text) => [...text].length;

export function validName(name) {
  const n = codePoints(name);
  return n >= 1 && n <= NAME_MAX && PRINTABLE_RE.test(name);
}
