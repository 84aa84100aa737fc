// The one name field. It sits in the lobby form (entering a room, quick match) and
// moves into the room's seat panel (taking a seat) while a room shows (navigation.js).

import { $, byTestId } from "./dom.js";
import { reservedName, validName } from "./limits.js";
import { rememberName, savedName } from "./store.js";

const el = {
  field: $("#name-field"),
  input: byTestId("name-input"),
  hint: $("#name-hint"),
};

export function currentName() {
  return el.input.value.trim();
}

export function focusName() {
  el.input.focus();
}

// The valid name in the field, or null; shows on the field whether it is valid.
export function checkName() {
  const name = currentName();
  const ok = validName(name);
  el.field.classList.toggle("invalid", !ok && name.length > 0);
  el.hint.textContent = ok || !name
    ? "1–32 characters, remembered on this device."
    : reservedName(name)
      ? "Computer is the computer opponent's name."
      : "Use 1–32 printable characters.";
  return ok ? name : null;
}

// The valid name, remembered; or null after asking for one "to <purpose>".
export function requireName(purpose) {
  const name = checkName();
  if (!name) {
    el.field.classList.add("invalid");
    if (!reservedName(currentName())) {
      el.hint.textContent = `Enter a name (1–32 characters) to ${purpose}.`;
    }
    el.input.focus();
    return null;
  }
  rememberName(name);
  return name;
}

// `handler(event)` runs when Enter is pressed in the field.
export function onNameEnter(handler) {
  el.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") handler(event);
  });
}

export function initNameField() {
  el.input.value = savedName();
  el.input.maxLength = 64; // code points are checked in JS; leave room for emoji
  el.input.addEventListener("input", () => {
    const name = checkName();
    if (name) rememberName(name);
  });
}
