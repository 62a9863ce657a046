"""What a CLI command is: arguments, a handler that returns an Envelope, a human renderer."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Callable, Union

from mlxk.contract import Envelope

Handler = Callable[[argparse.Namespace], Union[Envelope, int]]
Renderer = Callable[[Envelope, argparse.Namespace], None]


@dataclass(frozen=True)
class Command:
    """One verb. ``handler`` returns an Envelope (the CLI renders it) or an exit code
    (commands that stream to the terminal themselves, like ``run`` and ``serve``)."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Handler
    render: Renderer | None = None
    aliases: tuple[str, ...] = field(default=())
    envelope_name: str | None = None  # the "command" field when it differs from name

    @property
    def command_field(self) -> str:
        return self.envelope_name or self.name
