"""Look at report.html in a real browser: headless Chromium renders it to a PNG screenshot and a PDF.

    python tests/core/report_browser.py REPORT.html OUT_DIR

Fails when Chromium renders nothing (a screenshot of a few colours, a near-empty PDF). Run by `nox -s report-browser`, which first makes the reports.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise SystemExit("no Chromium on PATH (Debian/Ubuntu: apt-get install chromium)")


def render(page: Path, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{page.parent.name}.png", out / f"{page.parent.name}.pdf"
    base = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    url = page.resolve().as_uri()
    subprocess.run([*base, f"--screenshot={png}", "--window-size=1100,3000", url], check=True, timeout=120)
    subprocess.run([*base, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", url], check=True, timeout=120)
    return png, pdf


def check(png: Path, pdf: Path, page: Path) -> None:
    colours = Image.open(png).convert("RGB").getcolors(maxcolors=1 << 20)
    if colours is not None and len(colours) < 8:
        raise SystemExit(f"{png}: the page rendered as {len(colours)} colour(s): nothing drawn")
    if pdf.stat().st_size < 10_000:
        raise SystemExit(f"{pdf}: {pdf.stat().st_size} bytes: an empty PDF")
    embedded = page.read_text().count("data:image/png;base64,")
    print(
        f"{page}: screenshot {png} ({len(colours or []) or 'many'} colours), PDF {pdf} "
        f"({pdf.stat().st_size // 1024} KiB), {embedded} embedded image(s)"
    )


if __name__ == "__main__":
    page, out = Path(sys.argv[1]), Path(sys.argv[2])
    check(*render(page, out), page)
