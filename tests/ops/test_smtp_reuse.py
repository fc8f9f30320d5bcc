"""Issue 9: a worker process sends consecutive messages over one SMTP connection (up to
MAIL_CONNECTION_REUSE), and after the server dropped it, the next message reconnects by itself."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from campaign.extensions import db
from campaign.mail import sender
from campaign.mail.sink import SinkHandler, _free_port
from campaign.services.demo import seed_demo
from tests.support import deliver_due, sign


class PeerRecorder(SinkHandler):
    """The sink, noting the SMTP session (one per connection) of each message."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peers.append(session)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def recorder() -> Any:
    handler = PeerRecorder()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port("127.0.0.1"))
    controller.start()
    yield controller, handler
    controller.stop()
    sender._close(sender._local.held)


def _sign_and_send(app: Any, emails: list[str]) -> dict[str, int]:
    client = app.test_client()
    for address in emails:
        assert sign(client, email=address).status_code == 303
    return deliver_due(app)


def test_consecutive_messages_share_one_connection_up_to_the_limit(make_app, recorder) -> None:
    controller, handler = recorder
    app = make_app(MAIL_PORT=controller.port, MAIL_CONNECTION_REUSE=2)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    assert _sign_and_send(app, [f"reuse{n}@example.org" for n in range(5)]) == {"sent": 5}
    assert len(handler.messages) == 5
    # Checked against the one-connection-per-message sender once: five ports, and this failed.
    assert [len({id(s) for s in handler.peers[n:n + 2]}) for n in (0, 2)] == [1, 1]
    assert len({id(s) for s in handler.peers}) == 3  # 2 + 2 + 1


def test_a_connection_the_server_dropped_is_replaced_without_losing_the_message(
        make_app, recorder, monkeypatch) -> None:
    controller, handler = recorder
    monkeypatch.setattr(sender, "_CHECK_AFTER_IDLE", 0.0)  # NOOP before every reuse
    app = make_app(MAIL_PORT=controller.port)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    assert _sign_and_send(app, ["first@example.org"]) == {"sent": 1}
    held = sender._local.held
    assert held is not None and held.connection.host is not None
    held.connection.host.sock.shutdown(socket.SHUT_RDWR)  # as a server's idle timeout would leave it
    assert _sign_and_send(app, ["second@example.org"]) == {"sent": 1}
    assert len(handler.messages) == 2 and handler.peers[0] is not handler.peers[1]
