"""The web's Redis publisher (campaign/queue.py, _RedisPublisher): one LPUSH of the message kombu's
producer would have sent, and never an error to the request when Redis is away."""

from __future__ import annotations

import json
import time

import pytest
import redis

from campaign.observability import bind_request_id, release_request_id

VARYING = {("headers", "id"), ("headers", "root_id"), ("properties", "correlation_id"),
           ("properties", "delivery_tag")}


def _fields(message: dict) -> dict:
    flat = {}
    for part, value in message.items():
        if isinstance(value, dict):
            flat.update({(part, key): inner for key, inner in value.items() if (part, key) not in VARYING})
        else:
            flat[(part,)] = value
    return flat


def test_the_message_is_the_one_send_task_would_publish(make_app, redis_url):
    app = make_app(CELERY_BROKER_URL=redis_url)
    client = redis.Redis.from_url(redis_url)
    client.delete("confirmations", "letters")
    with app.app_context():
        celery = app.extensions["celery"]
        publish = app.extensions["campaign.publish"]
        for email_id, queue in ((7, "confirmations"), (2**40, "letters")):
            token = bind_request_id("0b7e4c1a-9d2f-4f6e-8a11-3c5d7e9f0a2b")[1]
            try:
                celery.send_task("outbox.send", args=[email_id], queue=queue, retry=False,
                                 headers={"request_id": "0b7e4c1a-9d2f-4f6e-8a11-3c5d7e9f0a2b"})
                publish(email_id, queue)
            finally:
                release_request_id(token)
            theirs, ours = (json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1)))
            assert _fields(ours) == _fields(theirs)
            assert ours["headers"]["root_id"] == ours["headers"]["id"]
            assert ours["headers"]["id"] != theirs["headers"]["id"]
            assert ours["properties"]["correlation_id"] == ours["headers"]["id"]
            assert ours["headers"]["request_id"] == "0b7e4c1a-9d2f-4f6e-8a11-3c5d7e9f0a2b"
    assert client.llen("confirmations") == client.llen("letters") == 2


def test_a_dead_broker_costs_the_request_nothing_and_is_skipped_for_a_while(make_app):
    app = make_app(CELERY_BROKER_URL="redis://127.0.0.1:1/0", BROKER_CONNECT_TIMEOUT=0.5)
    with app.app_context():
        publish = app.extensions["campaign.publish"]
        started = time.monotonic()
        publish(1, "confirmations")  # refused at once: logged, not raised
        publish(2, "confirmations")  # within the pause: not even tried
        assert time.monotonic() - started < 1.0
        assert publish.__self__.down_until > time.monotonic()


def test_a_dropped_broker_connection_does_not_make_the_worker_exit(make_app, redis_url):
    """kombu restores a worker's unacknowledged tasks when its channel closes; after the
    connection was released that raised AttributeError and the worker exited (A2 at 40/s)."""
    from kombu import Connection
    from kombu.transport import redis as kombu_redis

    make_app(CELERY_BROKER_URL=redis_url)  # installs the guard
    guarded = kombu_redis.QoS.restore_unacked
    channel = Connection(redis_url).default_channel
    qos = channel.qos
    try:
        qos._delivered["tag-1"] = None
        # What the consumer's close leaves behind: the transport released, the pool gone.
        channel.connection.client, channel._pool = None, None
        with pytest.raises(AttributeError):
            guarded._campaign_original(qos)
        assert guarded(qos) is None
    finally:
        qos._delivered.clear()
