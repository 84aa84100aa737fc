"""Bytes on the wire (`python -m bench.sockets --only wire`): what a spectator receives
during one game under each permessage-deflate setting, the zlib memory each keeps per idle
socket and its CPU per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from bench.socket_pool import open_socket, replica

# (label, permessage-deflate parameters the server could answer; None: no compression)
WIRE_SETTINGS: list[tuple[str, dict[str, Any] | None]] = [
    ("off", None),
    ("uvicorn default: window 12, memLevel 5, context takeover", {"bits": 12, "mem": 5}),
    ("window 9, memLevel 1, context takeover", {"bits": 9, "mem": 1}),
    ("window 12, memLevel 5, no context takeover", {"bits": 12, "mem": 5, "nct": True}),
    ("window 9, memLevel 1, no context takeover", {"bits": 9, "mem": 1, "nct": True}),
]


@dataclass
class Wire:
    setting: str
    frames: int
    payload_bytes: int
    wire_bytes: int  # payload + frame headers, server to client (unmasked)
    zlib_kib_per_idle_socket: float  # compressor + decompressor kept between messages
    encode_us_per_frame: float


def extension(params: dict[str, Any]) -> PerMessageDeflate:
    nct = bool(params.get("nct"))
    return PerMessageDeflate(nct, nct, params["bits"], params["bits"], {"memLevel": params["mem"]})


def header_bytes(size: int) -> int:
    return 2 if size < 126 else 4 if size < 65536 else 10


def wire_table(frames: list[str]) -> list[Wire]:
    """What each setting would put on the wire for these server-to-client frames."""
    rows = []
    raw = [f.encode() for f in frames]
    for label, params in WIRE_SETTINGS:
        if params is None:
            sizes = [len(r) for r in raw]
            rows.append(
                Wire(label, len(raw), sum(sizes), sum(s + header_bytes(s) for s in sizes), 0.0, 0.0)
            )
            continue
        tracemalloc.start()
        held = [extension(params) for _ in range(100)]  # zlib allocates through PyMem_Raw*
        kib = tracemalloc.get_traced_memory()[0] / 100 / 1024
        tracemalloc.stop()
        del held
        ext = extension(params)
        sizes = [len(ext.encode(Frame(Opcode.TEXT, r)).data) for r in raw]
        start = time.perf_counter()
        for _ in range(200):  # CPU: the same frames again, on the same socket
            for r in raw:
                ext.encode(Frame(Opcode.TEXT, r))
        took = (time.perf_counter() - start) / 200
        rows.append(
            Wire(
                label,
                len(raw),
                sum(sizes),
                sum(s + header_bytes(s) for s in sizes),
                kib,
                took / len(raw) * 1e6,
            )
        )
    return rows


async def game_frames(port: int) -> list[str]:
    """Everything a spectator receives while two players join, chat and play a game."""
    room = f"w{uuid.uuid4().hex[:10]}"
    frames: list[str] = []
    spectator = await open_socket(port, False, room)
    x = await open_socket(port, False, room)
    o = await open_socket(port, False, room)

    async def collect() -> None:
        async for frame in spectator:
            frames.append(str(frame))

    reader = asyncio.create_task(collect())
    try:
        for ws, name in ((x, "ana"), (o, "bo")):
            await ws.send(json.dumps({"type": "join", "name": name}))
            await asyncio.sleep(0.4)
        await x.send(json.dumps({"type": "chat", "text": "good luck!"}))
        await asyncio.sleep(0.2)
        for ws, cell in ((x, 0), (o, 3), (x, 1), (o, 4), (x, 2)):
            await ws.send(json.dumps({"type": "move", "cell": cell}))
            await asyncio.sleep(0.3)
        for ws in (x, o):
            await ws.send('{"type":"rematch"}')
            await asyncio.sleep(0.3)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        for ws in (spectator, x, o):
            await ws.close()
    return frames


async def wire(log_dir: Path, env: dict[str, str] | None = None) -> tuple[list[str], list[Wire]]:
    with replica(log_dir, env or {}) as (port, _):
        frames = await game_frames(port)
    return frames, wire_table(frames)
