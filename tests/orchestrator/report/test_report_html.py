"""The report's HTML page in headless Chromium: it renders, loads nothing from elsewhere,
every image it shows exists, and a screenshot is taken. In the DOM Chromium builds:
the settings block, the Born-unstable markers of the parity plots, the stability
confusion matrix, the hover labels of parity points, and a material's own page.

Chromium is required (Debian: ``apt-get install -y chromium``); without it this test
fails, it is never skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from matplotlib.image import imread

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)


def chromium() -> str:
    for name in _CANDIDATES:
        if path := shutil.which(name):
            return path
    raise AssertionError(
        "headless Chromium is required for the report page test but none was found on PATH "
        f"(tried {', '.join(_CANDIDATES)}); install it, e.g. `apt-get install -y chromium`"
    )


class _Links(HTMLParser):
    """Every src and href of a page, and the tags that would run or fetch code."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.active: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        for name in ("href", "xlink:href"):
            if values.get(name):
                self.links.append(values[name] or "")
        if tag in ("script", "link", "iframe", "object", "embed") or "@import" in str(values):
            self.active.append(tag)


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_page_in_headless_chromium(report_dir, tmp_path: Path) -> None:
    out, _, _ = report_dir
    index = out / "index.html"
    url = index.resolve().as_uri()

    dump = run_chromium(["--dump-dom", url], tmp_path / "profile-dom")
    assert dump.returncode == 0, dump.stderr[-2000:]
    assert "<h1>umlip report" in dump.stdout
    console = [line for line in dump.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    page = _Links()
    page.feed(dump.stdout)
    assert page.active == []  # no script, stylesheet link, frame or import
    assert len(page.images) >= 5  # the parity plots are inline SVG, the others images
    for src in page.images + page.links:
        parsed = urlparse(src)
        assert not parsed.scheme and not parsed.netloc, f"non-relative link {src}"
        if parsed.path:
            assert (out / unquote(parsed.path)).is_file(), f"missing {src}"
    source = index.read_text(encoding="utf-8")
    namespaces = ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink",
                  "http://purl.org/dc/elements/1.1/", "http://creativecommons.org/ns#",
                  "http://www.w3.org/1999/02/22-rdf-syntax-ns#")  # fmt: skip
    for namespace in namespaces:  # XML namespace names of the inline SVG: never fetched
        source = source.replace(namespace, "")
    assert "http://" not in source and "https://" not in source

    dom = dump.stdout
    settings = dom[dom.index('id="table-provenance"') :]
    assert "relax.fmax" in settings[: settings.index("</table>")]
    assert 'id="fig-stability_confusion"' in dom
    parity = dom[dom.index('id="fig-parity_g_vrh"') :]
    parity = parity[: parity.index("</figure>")]
    assert "<svg" in parity and 'id="unstable-points' in parity  # their own marker group
    hover = re.findall(r"<a xlink:href=\"(materials/[^\"]+)\"[^>]*><title>([^<]+)</title>", parity)
    assert hover, "parity points carry no hover title"
    link, title = hover[0]
    material_id = unquote(link.split("/")[1].split(".html")[0])
    assert title.startswith(f"{material_id} (") and "vs DFT" in title

    screenshot = tmp_path / "report-screenshot.png"
    shot = run_chromium(
        [f"--screenshot={screenshot}", "--window-size=1400,3000", url], tmp_path / "profile-shot"
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert [line for line in shot.stderr.splitlines() if ":CONSOLE" in line] == []
    assert screenshot.is_file() and screenshot.stat().st_size > 50_000
    pixels = imread(screenshot)
    assert pixels.shape[:2] == (3000, 1400)
    assert float(np.std(pixels[..., :3])) > 0.05  # text, tables and figures, not a blank page
    print(f"report screenshot: {screenshot}")


def test_material_page_in_headless_chromium(report_dir, tmp_path: Path) -> None:
    out, analysis, _ = report_dir
    unstable = sorted({p.material_id for p in analysis.pairs if p.model_born_stable is False})
    assert unstable, "the test run has a model-unstable material"
    from umlip_orchestrator.report.materials import page_name

    page = out / "materials" / page_name(unstable[0])
    dump = run_chromium(["--dump-dom", page.resolve().as_uri()], tmp_path / "profile-material")
    assert dump.returncode == 0, dump.stderr[-2000:]
    dom = dump.stdout
    assert dom.count('class="stress-strain"') == 12 and dom.count('class="point"') == 48
    assert "NOT Born-stable" in dom and "DFT C_ij (GPa)" in dom
    assert re.search(r"<title>" + re.escape(unstable[0]) + r" alpha: strain yz", dom)
    screenshot = tmp_path / "material-screenshot.png"
    shot = run_chromium(
        [f"--screenshot={screenshot}", "--window-size=1300,2200", page.resolve().as_uri()],
        tmp_path / "profile-material-shot",
    )
    assert shot.returncode == 0 and screenshot.stat().st_size > 20_000
    print(f"material screenshot: {screenshot}")
