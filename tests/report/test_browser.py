"""The report opened in headless Chromium: it renders, and every embedded image loads.

Needs Debian's chromium at /usr/bin/chromium (or CHROMIUM=path); skipped where it is absent (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = os.environ.get("CHROMIUM") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                          else shutil.which("chromium") or shutil.which("chromium-browser"))
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="headless Chromium not installed (/usr/bin/chromium absent)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
# Appended to a copy of the page: writes "<loaded>/<total>" images into the DOM once the page has loaded.
CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var d = document.createElement("div"); d.id = "img-check"; d.textContent = ok + "/" + imgs.length;
  document.body.appendChild(d);
});
</script>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_screenshot_renders(full_run, tmp_path):
    from PIL import Image

    _, report = full_run
    shot = tmp_path / "report.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,4000", report.resolve().as_uri())
    assert shot.exists(), res.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1400, 4000)
        px = np.asarray(im.convert("RGB"), dtype=np.int16)
    # Not blank: plenty of non-white pixels, many colours (figures), text and figures down the page.
    nonwhite = (px < 245).any(axis=2)
    assert nonwhite.mean() > 0.05
    assert len(np.unique(px.reshape(-1, 3)[::7], axis=0)) > 200
    rows = nonwhite.any(axis=1)
    assert rows[:500].any() and rows[2000:].any()


def test_every_image_loads(full_run, tmp_path):
    _, report = full_run
    page = tmp_path / "check.html"
    text = report.read_text()
    page.write_text(text.replace("</body>", CHECK_SCRIPT + "</body>"))
    n_img = text.count("<img ")
    res = _chromium(tmp_path, "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000", "--dump-dom",
                    page.as_uri())
    m = re.search(r'<div id="img-check">(\d+)/(\d+)</div>', res.stdout)
    assert m, (res.stdout[-500:], res.stderr[-2000:])
    assert int(m.group(2)) == n_img > 10
    assert int(m.group(1)) == n_img, f"only {m.group(1)} of {n_img} images loaded"
