"""What every case of the fault matrix shares: the CLI invoker, folder snapshots, and the one check of a refusal
(exit status 2, exactly one line starting with ``error:``, no traceback, no byte of the earlier results changed,
no new folder left behind)."""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

from robustcars.cli.app import app
from robustcars.lock import output_lock

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def bomb_png(path: Path, side: int = 14_000) -> None:
    """A tiny PNG file whose header claims side x side pixels (a decompression bomb for PIL)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@dataclass
class Case:
    name: str
    args: list[str]
    message: str
    env: dict[str, str] = field(default_factory=dict)
    hold_lock: str | None = None  # a folder locked by "another process" during the case
    new: list[str] = field(default_factory=list)  # paths that must not exist afterwards




def check_refusal(world: dict, case: Case) -> None:
    """Run ``case`` through the CLI and assert the refusal contract (see the module docstring)."""
    fmt = {k: str(v) for k, v in world.items()}
    args = [a.format(**fmt) for a in case.args]
    before = snapshot(world["root"] / "run"), snapshot(world["root"] / "not_a_report")
    lock = output_lock(case.hold_lock.format(**fmt)) if case.hold_lock else None
    if lock:
        lock.__enter__()
    try:
        r = invoke(*args, env=case.env or None)
    finally:
        if lock:
            lock.__exit__(None, None, None)
    out = r.output
    assert r.exit_code == 2, out
    assert "Traceback" not in out and not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and case.message in errors[0], out
    assert (snapshot(world["root"] / "run"), snapshot(world["root"] / "not_a_report")) == before
    for name in case.new:
        assert not (world["root"] / name).exists(), f"{name} was created"
    assert not list(world["root"].glob(".*.tmp")), "a half-written report folder was left behind"
