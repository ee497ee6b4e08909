"""The Prometheus rules and the Alertmanager routing, checked by the tools that run them.

`make system-deps` installs promtool and amtool (Debian's prometheus and
prometheus-alertmanager). A missing tool fails these tests instead of skipping
them: a config nobody checked is the one that fails on the night it matters.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
RULES = PROMETHEUS / "rules.yml"


def _run(tool: str, *args: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make system-deps` (Debian packages)")
    proc = subprocess.run([path, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{tool} {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_prometheus_config_and_its_rule_files_are_valid() -> None:
    out = _run("promtool", "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert "1 rule files found" in out


def test_alert_rules_pass_their_unit_tests() -> None:
    out = _run("promtool", "test", "rules", str(PROMETHEUS / "rules_test.yml"))
    assert "SUCCESS" in out


def test_every_alert_rule_has_a_unit_test_and_a_severity() -> None:
    rules = RULES.read_text()
    tests = (PROMETHEUS / "rules_test.yml").read_text()
    alerts = re.findall(r"^\s+- alert: (\w+)$", rules, re.MULTILINE)
    assert alerts, "no alert rules found"
    untested = [name for name in alerts if f"alertname: {name}" not in tests]
    assert not untested, f"alert rules without a promtool test: {untested}"
    # XpExperienceDrop takes its severity from the detector's own label.
    assert rules.count("severity: ") == len(alerts) - 1


def test_alertmanager_config_is_valid() -> None:
    out = _run("amtool", "check-config", str(ALERTMANAGER))
    assert "SUCCESS" in out


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=XpExperienceDrop"], "xp-critical"),
        (["severity=warning", "alertname=XpCsatDrop"], "xp-warning"),
        (["alertname=XpSomethingNew"], "xp-warning"),
    ],
)
def test_alerts_are_routed_by_severity(labels: list[str], receiver: str) -> None:
    out = _run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert out.strip() == receiver
