"""The Redis eviction guard (RELIABILITY.md 11): `flask check-redis` and /readyz fail unless
maxmemory-policy is noeviction, checked on a private redis-server with another policy."""

from __future__ import annotations

import pytest
import redis

pytestmark = pytest.mark.integration


def test_check_redis_and_readyz_refuse_an_evicting_redis(private_redis, make_migrated_app):
    server = private_redis("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
    app = make_migrated_app(CELERY_BROKER_URL=server.url, REDIS_URL=server.url)

    result = app.test_cli_runner().invoke(args=["check-redis"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert f"Redis at 127.0.0.1:{server.port}/0 has maxmemory-policy allkeys-lru" in result.output
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["failed"] == ["broker"]
    assert ready.get_json()["checks"]["broker"] == "maxmemory-policy is allkeys-lru, not noeviction"

    client = redis.Redis.from_url(server.url, socket_timeout=3)
    client.config_set("maxmemory-policy", "noeviction")
    client.close()
    result = app.test_cli_runner().invoke(args=["check-redis"])
    assert result.exit_code == 0, result.output
    assert result.output == f"Redis at 127.0.0.1:{server.port}/0: maxmemory-policy noeviction\n"
    assert app.test_client().get("/readyz").status_code == 200


def test_check_redis_names_each_redis_and_fails_on_the_one_that_evicts(private_redis, make_migrated_app):
    good = private_redis()
    bad = private_redis("--maxmemory-policy", "volatile-ttl")
    app = make_migrated_app(CELERY_BROKER_URL=good.url, REDIS_URL=bad.url)
    result = app.test_cli_runner().invoke(args=["check-redis"])
    assert result.exit_code == 1
    assert f"Redis at 127.0.0.1:{good.port}/0: maxmemory-policy noeviction" in result.output
    assert f"127.0.0.1:{bad.port}/0 has maxmemory-policy volatile-ttl" in result.output
    ready = app.test_client().get("/readyz").get_json()
    assert ready["failed"] == ["redis"] and ready["checks"]["broker"] == "ok"


def test_check_redis_on_a_dead_redis_says_so(make_migrated_app):
    app = make_migrated_app(CELERY_BROKER_URL="redis://:pw-not-shown@127.0.0.1:1/0")
    result = app.test_cli_runner().invoke(args=["check-redis"])
    assert result.exit_code == 1
    assert "Redis at 127.0.0.1:1/0 did not answer: ConnectionError" in result.output
    assert "pw-not-shown" not in result.output


def test_the_suites_own_redis_does_not_evict(make_migrated_app, redis_url):
    """The Redis that `make test` and CI run against: the build fails if it evicts."""
    app = make_migrated_app(CELERY_BROKER_URL=redis_url, REDIS_URL=redis_url)
    result = app.test_cli_runner().invoke(args=["check-redis"])
    assert result.exit_code == 0, result.output


def test_no_redis_in_use_is_not_an_error(make_migrated_app):
    result = make_migrated_app().test_cli_runner().invoke(args=["check-redis"])
    assert result.exit_code == 0
    assert result.output == "no Redis in use (broker: memory://)\n"
