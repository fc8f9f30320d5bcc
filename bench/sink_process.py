"""The benchmarks' SMTP sink: campaign.mail.sink.start_sink on loopback, in a process of its own.

Prints "ready <port>", then one line per message: arrival time (Unix seconds), recipient, and the
confirmation link's path if the message has one. Stops on SIGTERM or after --max-seconds.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from email.message import EmailMessage

from campaign.mail.sink import start_sink

LINK = re.compile(r"https?://[^/\s]+(/confirm/[A-Za-z0-9._-]+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=4 * 3600)
    args = parser.parse_args()
    out_lock = threading.Lock()

    def arrived(message: EmailMessage) -> None:
        when = time.time()
        part = message.get_body(("plain",))
        text = str(part.get_content()) if part is not None else ""
        match = LINK.search(text)
        recipient = str(message.get("To", "")).strip()
        if "<" in recipient:
            recipient = recipient.split("<", 1)[1].rstrip(">")
        with out_lock:
            sys.stdout.write(f"{when:.6f}\t{recipient}\t{match.group(1) if match else ''}\n")
            sys.stdout.flush()

    controller, handler = start_sink(args.port)
    handler.on_message = arrived
    # The sink keeps every message in memory for tests; the benchmark only needs the lines.
    handler.messages = _Discard()
    print(f"ready {controller.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait(args.max_seconds)
    controller.stop()


class _Discard(list):
    def append(self, item: object) -> None:
        pass


if __name__ == "__main__":
    main()
