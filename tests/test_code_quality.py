"""Lint, types and import direction are part of the suite, so they cannot decay unnoticed."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def test_ruff_passes_including_the_import_direction_rules():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_passes_on_campaign_and_worker():
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_never_import_the_web_layer_or_the_worker():
    offenders = []
    for path in (ROOT / "campaign" / "services").glob("*.py"):
        text = path.read_text()
        for banned in ("from flask import request", "flask.request", "campaign.web", "import worker",
                       "from worker"):
            if banned in text:
                offenders.append(f"{path.name}: {banned}")
    assert offenders == []
