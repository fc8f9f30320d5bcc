"""Settings: production refuses to start without its secrets; development fills them in."""

from __future__ import annotations

import json

import pytest

from campaign.config import ConfigError, database_url, load_config


def test_production_is_the_default_and_needs_its_secrets(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(str(tmp_path), environ={})
    for name in ("SECRET_KEY", "BASE_URL", "SIGNER_DATA_KEYS", "BLIND_INDEX_KEY", "DATABASE_URL"):
        assert name in str(error.value)


def test_production_refuses_the_dev_mailbox_and_crash_points(tmp_path):
    env = {"SECRET_KEY": "k", "BASE_URL": "https://act.example.org", "SIGNER_DATA_KEYS": "x", "REDIS_URL": "redis://r:6379/0",
           "BLIND_INDEX_KEY": "y", "DATABASE_URL": "postgresql://u@db:5432/campaign"}
    assert load_config(str(tmp_path), environ=env)["CAMPAIGN_ENV"] == "production"
    with pytest.raises(ConfigError, match="DEV_MAILBOX"):
        load_config(str(tmp_path), environ=env | {"DEV_MAILBOX": "true"})
    with pytest.raises(ConfigError, match="CRASH_POINT"):
        load_config(str(tmp_path), environ=env | {"CAMPAIGN_CRASH_POINT": "x", "CRASH_POINT": "after_smtp"})


def test_plain_postgresql_urls_use_the_projects_driver(tmp_path):
    assert database_url("postgresql://u@h:5432/d") == "postgresql+psycopg://u@h:5432/d"
    assert database_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_development_generates_secrets_once_and_keeps_them(tmp_path):
    first = load_config(str(tmp_path), environ={"CAMPAIGN_ENV": "development"})
    second = load_config(str(tmp_path), environ={"CAMPAIGN_ENV": "development"})
    assert first["SIGNER_DATA_KEYS"] == second["SIGNER_DATA_KEYS"]
    stored = json.loads((tmp_path / "secrets.json").read_text())
    assert stored["SECRET_KEY"] == first["SECRET_KEY"]
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert first["DATABASE_URL"].startswith("sqlite:///")
    assert first["CELERY_BROKER_URL"] == "filesystem://"
    assert first["DEV_MAILBOX"] is True


def test_bad_values_are_refused_with_the_setting_named(tmp_path):
    with pytest.raises(ConfigError, match="MAIL_PORT"):
        load_config(str(tmp_path), environ={"CAMPAIGN_ENV": "development", "MAIL_PORT": "twenty"})
    with pytest.raises(ConfigError, match="MAIL_USE_TLS"):
        load_config(str(tmp_path), environ={"CAMPAIGN_ENV": "development", "MAIL_USE_TLS": "maybe"})
    with pytest.raises(ConfigError, match="CAMPAIGN_ENV"):
        load_config(str(tmp_path), environ={"CAMPAIGN_ENV": "staging"})


def test_every_setting_can_come_from_the_environment(tmp_path):
    config = load_config(str(tmp_path), environ={
        "CAMPAIGN_ENV": "development", "EMAILS_PER_ADDRESS_PER_PETITION": "3",
        "OUTBOX_SWEEP_INTERVAL": "2.5", "DEV_MAILBOX": "false"})
    assert config["EMAILS_PER_ADDRESS_PER_PETITION"] == 3
    assert config["OUTBOX_SWEEP_INTERVAL"] == 2.5
    assert config["DEV_MAILBOX"] is False


def test_production_needs_a_broker(tmp_path):
    env = {"SECRET_KEY": "k", "BASE_URL": "https://act.example.org", "SIGNER_DATA_KEYS": "x",
           "BLIND_INDEX_KEY": "y", "DATABASE_URL": "postgresql://u@db:5432/campaign"}
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_config(str(tmp_path), environ=env)
    assert load_config(str(tmp_path), environ=env | {"CELERY_BROKER_URL": "redis://r/1"})["CELERY_BROKER_URL"]


def test_explicit_mail_settings_win_in_development(tmp_path):
    config = load_config(str(tmp_path), {"MAIL_SERVER": "smtp.internal", "DEV_MAILBOX": False},
                         environ={"CAMPAIGN_ENV": "development"})
    assert config["MAIL_SERVER"] == "smtp.internal" and config["DEV_MAILBOX"] is False


def test_the_relay_on_the_filesystem_broker_runs_tasks_without_a_prefork_pool(make_app, tmp_path):
    # The filesystem broker has no event loop, so prefork would be billiard's shared-pipe pool,
    # which one SIGKILLed idle child wedges for good (docs/reliability.md, A12).
    embedded = make_app(CELERY_BROKER_URL="filesystem://", CELERY_BROKER_FOLDER=str(tmp_path / "broker"))
    assert embedded.extensions["celery"].conf.worker_pool == "solo"
    deployed = make_app(CELERY_BROKER_URL="redis://127.0.0.1:6379/15")
    assert deployed.extensions["celery"].conf.worker_pool == "prefork"
