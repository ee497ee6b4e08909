"""`xp report` on pipeline-produced data, opened in headless Chromium.

Chromium renders the file from disk with networking off, so a chart that needed
a script, a font or a URL would not appear. The screenshot must show the chart
colours; the DOM Chromium built must hold the SVG elements.

`XP_UPDATE_SCREENSHOT=1` also writes the screenshot, cropped, to docs/report.png
(the README shows it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from pipeline.charts import CHANNEL_COLORS, ERROR_COLOR
from tests.integration.exactness import XP, xp
from tests.traffic import Processed

pytestmark = pytest.mark.integration

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "report.png"
WINDOW = (1280, 1800)
#: Line charts: stage conversion, CSAT, NPS, CES and support times.
TIME_CHARTS = 5
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: run `make system-deps` (Debian package chromium)"
    proc = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def report(simulated_traffic: Processed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    printed = xp(
        "report", "--data-dir", str(simulated_traffic.data_dir), "--out", str(out), timeout=300
    )
    assert str(out) in printed
    return out


def test_the_report_is_one_self_contained_file(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    for outside in ("<script", "<link", "src=", "url(", "@import", "http:", "https:"):
        assert outside not in html, f"the report refers to something outside itself: {outside}"
    assert "What changed" in html


def test_chromium_renders_every_chart(report: Path, tmp_path: Path) -> None:
    dom = chromium(tmp_path / "dom-profile", "--dump-dom", report.as_uri()).stdout
    kinds = re.findall(r'<svg class="chart" data-chart="(\w+)"', dom)
    assert kinds.count("funnel") == 1 and kinds.count("bars") == 1
    assert kinds.count("line") == TIME_CHARTS
    # Three conversion steps, CSAT, NPS, CES, and the two support times.
    assert len(re.findall(r'<path class="series"', dom)) >= 8
    assert len(re.findall(r'<rect class="bar"', dom)) >= 8
    alerts = len(re.findall(r"<span class=\"badge\">", dom))
    assert len(re.findall(r'<g class="alert-band"', dom)) == TIME_CHARTS * alerts
    if not alerts:
        assert "No alerts were raised in this period" in dom

    shot = tmp_path / "report.png"
    chromium(
        tmp_path / "shot-profile",
        f"--screenshot={shot}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        report.as_uri(),
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == WINDOW
    counts = {color: n for n, color in image.getcolors(maxcolors=WINDOW[0] * WINDOW[1]) or []}
    assert len(counts) > 500, "the screenshot is nearly blank"
    for name, color in {**CHANNEL_COLORS, "errors": ERROR_COLOR}.items():
        pixels = counts.get(_rgb(color), 0)
        assert pixels > 300, f"{name} bars ({color}) are missing from the screenshot: {pixels} px"
    if os.environ.get("XP_UPDATE_SCREENSHOT"):
        _crop_to_content(image).save(DOCS_SCREENSHOT, optimize=True)


def _rgb(color: str) -> tuple[int, int, int]:
    value = int(color.lstrip("#"), 16)
    return (value >> 16, value >> 8 & 0xFF, value & 0xFF)


def _crop_to_content(image: Image.Image) -> Image.Image:
    """Drop the empty page background below the footer."""
    background = image.getpixel((0, image.height - 1))
    bottom = image.height
    while bottom > 1 and all(
        image.getpixel((x, bottom - 1)) == background for x in range(0, image.width, 8)
    ):
        bottom -= 1
    return image.crop((0, 0, image.width, min(image.height, bottom + 16)))


def test_a_directory_without_xp_data_is_refused_plainly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            str(XP),
            "report",
            "--data-dir",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "r.html"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "no xp data in" in proc.stderr and "xp demo" in proc.stderr
    assert not (tmp_path / "r.html").exists()
