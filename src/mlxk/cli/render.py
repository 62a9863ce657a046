"""Human rendering of envelopes. Rich tables on a terminal; plain columns in pipes."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Iterable

from mlxk.contract import Envelope


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(
        file=stream,
        no_color=not tty,
        highlight=False,
        soft_wrap=not tty,
        width=None if tty else 10_000,
    )


def print_json(env: Envelope) -> None:
    sys.stdout.write(json.dumps(env.to_dict(), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_error(env: Envelope) -> None:
    err = env.error or {}
    con = console(stderr=True)
    con.print(f"Error: {err.get('message', 'unknown error')}", markup=False, style="bold red")
    matches = err.get("matches") or (env.data or {}).get("matches") if isinstance(env.data, dict) else err.get("matches")
    if matches:
        con.print("Matching models:", markup=False)
        for m in matches:
            con.print(f"  {m}", markup=False)
    hashes = err.get("available_hashes")
    if hashes:
        con.print("Cached snapshots: " + ", ".join(hashes), markup=False)


def relative_time(iso: str) -> str:
    from datetime import datetime, timezone

    try:
        then = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return iso
    delta = max(0, time.time() - then)
    for unit, secs in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if delta >= secs:
            n = int(delta // secs)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def table(columns: Iterable[str], rows: list[list[str]]) -> None:
    from rich import box
    from rich.table import Table

    con = console()
    tty = con.is_terminal
    tbl = Table(box=box.SIMPLE_HEAD if tty else None, show_edge=False, pad_edge=False, header_style="bold" if tty else "")
    for col in columns:
        tbl.add_column(col, overflow="fold", no_wrap=not tty)
    for row in rows:
        tbl.add_row(*row)
    con.print(tbl)


def line(text: str = "", style: str | None = None, stderr: bool = False) -> None:
    console(stderr=stderr).print(text, markup=False, style=style)


def kv(pairs: list[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    con = console()
    for key, value in pairs:
        con.print(f"{key + ':':<{width + 1}} {value}", markup=False)
