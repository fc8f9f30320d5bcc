"""The documentation and the deployment files agree with the code: settings, the README's first
commands, the production Procfile's queues, and token redaction in gunicorn's access log."""

from __future__ import annotations

import importlib.util
import logging
import re
import shlex
from datetime import timedelta
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from campaign import register_logging
from campaign.config import REQUIRED_IN_PRODUCTION, SETTINGS
from campaign.queue import QUEUE_NAMES
from tests.support import ROOT

CONFIGURATION = ROOT / "docs" / "configuration.md"


def _table_names(markdown: str) -> list[str]:
    """The first cell of every Markdown table row, without header and separator rows."""
    names: list[str] = []
    lines = markdown.splitlines()
    for number, line in enumerate(lines):
        if not line.lstrip().startswith("|"):
            continue
        following = lines[number + 1] if number + 1 < len(lines) else ""
        if re.fullmatch(r"\s*\|[\s:|-]+\|?\s*", line) or re.fullmatch(r"\s*\|[\s:|-]+\|?\s*", following):
            continue  # a separator row, or the header row above it
        names.append(line.strip().strip("|").split("|")[0].strip().strip("`"))
    return names


def test_configuration_doc_lists_every_setting_and_no_other():
    documented = _table_names(CONFIGURATION.read_text("utf-8"))
    declared = [setting.name for setting in SETTINGS]
    missing = sorted(set(declared) - set(documented))
    unknown = sorted(set(documented) - set(declared))
    assert not missing, f"settings missing from docs/configuration.md: {missing}"
    assert not unknown, f"docs/configuration.md names settings that do not exist: {unknown}"
    duplicated = sorted({name for name in documented if documented.count(name) > 1})
    assert not duplicated, f"documented twice: {duplicated}"


def test_table_parser_sees_rows_and_skips_headers():
    doc = "| Setting | Default | Meaning |\n|---|---|---|\n| `A` | 1 | x |\n| B | 2 | y |\n\ntext | not a row"
    assert _table_names(doc) == ["A", "B"]


def test_configuration_doc_lists_what_production_requires():
    text = CONFIGURATION.read_text("utf-8")
    section = text.split("## Production", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- `([A-Z_]+)`\s*$", section, flags=re.MULTILINE)
    assert sorted(listed) == sorted(REQUIRED_IN_PRODUCTION)


def test_readme_starts_with_the_two_commands():
    start = (ROOT / "README.md").read_text("utf-8")[:3000]
    assert "make run" in start
    assert "make test" in start


def test_links_between_docs_point_at_files_that_exist():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", doc.read_text("utf-8")):
            assert (doc.parent / target).exists(), f"{doc.name} links to a missing {target}"


# --- the production Procfile ----------------------------------------------------------------

def _procfile() -> dict[str, list[str]]:
    processes: dict[str, list[str]] = {}
    for line in (ROOT / "Procfile").read_text("utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            processes[name.strip()] = shlex.split(command)
    return processes


def _option(args: list[str], *names: str) -> str | None:
    for index, arg in enumerate(args):
        if arg in names and index + 1 < len(args):
            return args[index + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def test_procfile_consumes_every_queue_and_runs_exactly_one_beat():
    processes = _procfile()
    consumed: list[str] = []
    beats = 0
    for args in processes.values():
        if args[:3] != ["celery", "-A", "worker"]:
            continue
        if args[3] == "beat":
            beats += 1
        elif args[3] == "worker":
            # Without -Q a worker consumes only the default queue ("bulk"), not confirmations.
            queues = _option(args, "-Q", "--queues")
            assert queues, f"a worker without -Q: {shlex.join(args)}"
            consumed += queues.split(",")
            beats += "-B" in args or "--beat" in args
    assert sorted(set(consumed)) == sorted(QUEUE_NAMES)
    assert beats == 1, "beat must run exactly once"
    assert processes["web"][:1] == ["gunicorn"]
    assert "app:app" in processes["web"]


# --- gunicorn's access log ------------------------------------------------------------------

def _load_gunicorn_conf() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gunicorn_conf_under_test", ROOT / "gunicorn.conf.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_gunicorn_loggers():
    """gunicorn's Logger configures process-wide loggers; put them back as they were."""
    saved = {}
    for name in ("gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), list(logger.filters), logger.propagate, logger.level)
    yield
    for name, (handlers, filters, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.filters[:] = filters
        logger.propagate = propagate
        logger.setLevel(level)


def _request(path: str) -> tuple[Any, Any, dict[str, str]]:
    response = SimpleNamespace(status="404 NOT FOUND", sent=992, headers=[("Content-Type", "text/html")])
    request = SimpleNamespace(headers=[("HOST", "act.example.org"), ("USER-AGENT", "curl/8")])
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": path, "PATH_INFO": path, "QUERY_STRING": "",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "198.51.100.23"}
    return response, request, environ


@pytest.mark.usefixtures("restore_gunicorn_loggers")
def test_gunicorn_access_log_redacts_tokens_with_the_apps_filter_installed(tmp_path, capsys):
    from gunicorn.config import Config

    conf = _load_gunicorn_conf()
    log_file = tmp_path / "access.log"
    cfg = Config()
    cfg.set("accesslog", str(log_file))
    cfg.set("errorlog", str(tmp_path / "error.log"))
    cfg.set("access_log_format", conf.access_log_format)
    logger = conf.logger_class(cfg)
    register_logging(Flask(__name__))  # what create_app() does in each gunicorn worker

    secret = "eyJzIjoxLCJlIjoiYWJjIn0.Zx1.AbC-dEf_123"
    for path in (f"/confirm/{secret}", "/petitions/g20-chechnya"):
        logger.access(*_request(path), timedelta(milliseconds=3))
    for handler in logging.getLogger("gunicorn.access").handlers:
        handler.flush()

    lines = log_file.read_text().splitlines()
    assert len(lines) == 2, lines
    assert '"GET /confirm/[redacted] HTTP/1.1" 404 992' in lines[0]
    assert '"GET /petitions/g20-chechnya HTTP/1.1" 404' in lines[1]
    written = log_file.read_text() + (tmp_path / "error.log").read_text() + capsys.readouterr().err
    assert secret not in written
    assert "198.51.100.23" not in written  # no raw client address
    assert "Logging error" not in written
