// Tic-tac-toe live: the page that plays protocol version 1 (docs/protocol.md).
// Loaded by game/templates/game/index.html as <script type="module">; this entry
// wires the modules below and shows what the URL asks for.
//
//   navigation.js   lobby "/" or room "/?room=<code>": URL, history, views, room chip
//   lobby.js        the room-code form and quick match (its own lobby socket)
//   room.js         the room view: room socket, board, seat, players, audience, status
//   chat.js         the room's chat log and form
//   leaderboard.js  the leaderboard panel (GET /api/leaderboard)
//   wire.js         the WebSocket both sockets use: reconnects, pings, frames by type
//   name.js         the one name field, shared by lobby and room
//   store.js        what this browser remembers (localStorage keys)
//   limits.js       what the server accepts: room codes, names, chat length
//   dom.js          finding elements; toasts
//
// Native ES modules, no framework, no build step: in production collectstatic
// rewrites the relative module paths to the hashed file names (see STORAGES in
// config/settings/base.py). All user-supplied text reaches the DOM through
// textContent only.

import { initLeaderboard, loadLeaderboard } from "./leaderboard.js";
import { initLobby, renderQuickMatch } from "./lobby.js";
import { initNameField } from "./name.js";
import { enterRoom, initNavigation, route } from "./navigation.js";
import { initRoom } from "./room.js";

initNameField();
initLobby({ enterRoom });
initRoom();
initNavigation();
initLeaderboard();

route();
renderQuickMatch();
loadLeaderboard();
