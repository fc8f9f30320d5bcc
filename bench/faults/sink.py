"""The fault benchmarks' SMTP sink: aiosmtpd on loopback, in a process of its own, told what to do
on its standard input and reporting every event on its standard output.

Events, one tab-separated line each (time in Unix seconds):
  R <time> <recipient> <code>   a RCPT answered with a refusal (421, 550, ...)
  D <time> <recipient>          the message's DATA arrived, before the answer (see `delay`)
  A <time> <recipient>          the message was accepted (250), one line per recipient
  L <time> <recipient> <path>   the confirmation link's path, when the message has one
Commands, one line each, answered with "ok <command>" once in force:
  refuse <address|*> <reply>    answer RCPT for that address (or every one) with the reply,
                                e.g. "refuse * 421 4.7.0 try later", "refuse x@y 550 5.1.1 no such user"
  allow <address|*>             stop refusing it;  clear: stop refusing anything
  delay <seconds>               wait that long before answering DATA (a send in flight)
The messages themselves are not kept: the benchmarks count recipients, which are unique per row.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from campaign.mail.sink import REFUSE_ALL, SinkHandler

_out = threading.Lock()
LINK = re.compile(r"https?://[^/\s]+(/confirm/[A-Za-z0-9._-]+)")


def emit(*fields: str) -> None:
    with _out:
        sys.stdout.write("\t".join(fields) + "\n")
        sys.stdout.flush()


class FaultSink(SinkHandler):
    """The project's sink (refusals by address or "*") that reports instead of keeping messages."""

    def __init__(self) -> None:
        super().__init__(None)
        self.data_delay = 0.0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        reply = self.refusals.get(address.lower()) or self.refusals.get(REFUSE_ALL)
        if reply:
            emit("R", f"{time.time():.6f}", address.lower(), reply.split()[0])
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            emit("D", f"{time.time():.6f}", rcpt.lower())
        if self.data_delay > 0:
            await asyncio.sleep(self.data_delay)
        link = confirm_path(envelope.original_content or envelope.content)
        for rcpt in envelope.rcpt_tos:
            emit("A", f"{time.time():.6f}", rcpt.lower())
            if link:
                emit("L", f"{time.time():.6f}", rcpt.lower(), link)
        return "250 Message accepted for delivery"


def confirm_path(raw: bytes) -> str:
    message = message_from_bytes(raw, policy=policy.default)
    if not isinstance(message, EmailMessage):
        return ""
    part = message.get_body(("plain",))
    match = LINK.search(str(part.get_content())) if part is not None else None
    return match.group(1) if match else ""


def control(handler: FaultSink, stop: threading.Event) -> None:
    for line in sys.stdin:
        words = line.strip().split(maxsplit=2)
        if not words:
            continue
        command = words[0]
        if command == "refuse" and len(words) == 3:
            handler.refusals[words[1].lower()] = words[2]
        elif command == "allow" and len(words) == 2:
            handler.refusals.pop(words[1].lower(), None)
        elif command == "clear":
            handler.refusals.clear()
        elif command == "delay" and len(words) == 2:
            handler.data_delay = float(words[1])
        else:
            emit("error", line.strip())
            continue
        emit("ok", line.strip())
    stop.set()  # the benchmark went away: so does the sink


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=4 * 3600)
    args = parser.parse_args()
    handler = FaultSink()
    controller = Controller(handler, hostname="127.0.0.1", port=args.port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=control, args=(handler, stop), daemon=True).start()
    emit("ready", str(args.port))
    stop.wait(args.max_seconds)
    controller.stop()


if __name__ == "__main__":
    main()
