// What the server accepts (docs/protocol.md), checked here before anything is sent.

export const ROOM_RE = /^[A-Za-z0-9_-]{1,32}$/;
export const CHAT_MAX = 280; // code points
const NAME_MAX = 32; // code points
// Python's str.isprintable(): no control/format/unassigned characters and no
// separators except the ASCII space.
const PRINTABLE_RE = /^(?:[^\p{C}\p{Z}]| )+$/u;

// The server counts characters as code points, not UTF-16 units: an emoji is one.
export const codePoints = (text) => [...text].length;

// Letters that print as nothing: with white space, all a blank name or message is made of.
const INVISIBLE_RE = /[\u115f\u1160\u3164\uffa0\u2800\s]/gu;
const visible = (text) => text.replace(INVISIBLE_RE, "").length > 0;
const CHAT_LINE_BREAKS_MAX = 5;

// The computer opponent's name: nobody else may play under it, in any case or width.
export const reservedName = (name) =>
  name.normalize("NFKC").replace(INVISIBLE_RE, "").toLowerCase() === "computer";

export function validName(name) {
  const n = codePoints(name);
  return n >= 1 && n <= NAME_MAX && PRINTABLE_RE.test(name) && visible(name) &&
    !reservedName(name);
}

// The reason a chat message would be refused, or "" if it is fine.
export function chatProblem(text) {
  const n = codePoints(text);
  if (n > CHAT_MAX) return `Messages are at most ${CHAT_MAX} characters.`;
  if ((text.match(/\n/g) || []).length > CHAT_LINE_BREAKS_MAX) {
    return `Messages have at most ${CHAT_LINE_BREAKS_MAX} line breaks.`;
  }
  if (!PRINTABLE_RE.test(text.replace(/\n/g, " "))) {
    return "Messages cannot hold control characters.";
  }
  return visible(text) ? "" : "Messages cannot be blank.";
}
