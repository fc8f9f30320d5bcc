"""A real SMTP server on loopback that keeps what it receives: the dev mailbox and the tests' sink.

Messages go into a Maildir (one file each) and, for tests, a list in memory. It can be told to
answer every message, or chosen recipients, with an SMTP error to rehearse failures.
"""

from __future__ import annotations

import argparse
import mailbox
import signal
import threading
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

REFUSE_ALL = "*"


class SinkHandler:
    def __init__(self, maildir: str | Path | None = None) -> None:
        self.maildir = mailbox.Maildir(str(maildir), create=True) if maildir else None
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()
        # recipient (or REFUSE_ALL) -> SMTP reply, e.g. "550 5.1.1 no such user"
        self.refusals: dict[str, str] = {}
        self.on_message: Callable[[EmailMessage], None] | None = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        reply = self.refusals.get(address.lower()) or self.refusals.get(REFUSE_ALL)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.messages.append(message)
            if self.maildir is not None:
                self.maildir.add(raw)
        if self.on_message:
            self.on_message(message)
        return "250 Message accepted for delivery"


def start_sink(port: int = 0, maildir: str | Path | None = None,
               host: str = "127.0.0.1") -> tuple[Controller, SinkHandler]:
    """Start the sink in a background thread; port 0 picks a free one (controller.port)."""
    handler = SinkHandler(maildir)
    controller = Controller(handler, hostname=host, port=port or _free_port(host))
    controller.start()
    return controller, handler


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="Local SMTP sink for the dev mailbox.")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--maildir", default="instance/mailbox")
    args = parser.parse_args()
    controller, _ = start_sink(args.port, args.maildir)
    print(f"SMTP sink on 127.0.0.1:{controller.port}, writing to {args.maildir}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
