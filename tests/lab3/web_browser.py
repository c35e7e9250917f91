"""`lab3 serve` in a real browser (the opt-in nox session `web-browser`): the app with tiny random models (a
narrator with two voices among them) on a loopback port; Chromium driven by Selenium uploads scikit-learn's
china.jpg, presses the button, waits for the story, checks what the page shows, runs axe-core, and saves
screenshots at 1280 and 400 px wide.

Checked: no word count before the story ends, then the count, the narration and the storybook download; the
story on screen never shrinks while it is written; axe-core finds no critical or serious violation (at both
widths); at 400 px the page is centred and the examples come above the outputs.

    python tests/lab3/web_browser.py OUT_DIR     # needs chromium + chromedriver on PATH (Debian: apt-get
                                                    # install chromium chromium-driver), selenium, and
                                                    # AXE_JS=…/axe-core/axe.min.js (npm install axe-core)
Exit 0 with the screenshots and axe's report in OUT_DIR; 1 with the failed checks; 77 (skipped) with a message
where there is no Chromium or no axe-core.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

SKIP = 77


def browser_paths() -> tuple[str, str] | None:
    chromium = next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None
    )
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def axe_violations(driver, axe_js: str) -> list[dict]:
    """axe-core's critical and serious violations of the page as it is now."""
    driver.execute_script(Path(axe_js).read_text())
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations), e => done(String(e)));"
    )
    if isinstance(result, str):
        raise RuntimeError(f"axe-core failed: {result}")
    return [v for v in result if v.get("impact") in ("critical", "serious")]


def _box(driver, css: str) -> dict:
    return driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {left: r.left, right: r.right, top: r.top, width: window.innerWidth};",
        css,
    )


def main(out: Path) -> int:
    paths = browser_paths()
    axe_js = os.environ.get("AXE_JS", "")
    if paths is None or not Path(axe_js).is_file():
        print(
            "web-browser SKIPPED: "
            + (
                "no Chromium and chromedriver on PATH (Debian/Ubuntu: apt-get install chromium chromium-driver)"
                if paths is None
                else "no axe-core (npm install axe-core; AXE_JS=…/node_modules/axe-core/axe.min.js)"
            ),
            file=sys.stderr,
        )
        return SKIP
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from lab3_story import ImageStoryGenerator
    from lab3_story.narration import Narrator
    from lab3_story.random_models import save_random_models, save_random_narrator
    from lab3_story.web import example_photos, launch

    out.mkdir(parents=True, exist_ok=True)
    models = save_random_models(Path(tempfile.mkdtemp(prefix="lab3-web-")))
    narrator = Narrator(str(save_random_narrator(models / "narrator", speakers=2)))
    gen = ImageStoryGenerator(
        caption_model=str(models / "captioner"), story_model=str(models / "storyteller")
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch(gen, port=port, block=False, narrator=narrator)
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=paths[1]))
    driver.set_script_timeout(60)
    failures: list[str] = []
    report: dict[str, object] = {}
    try:
        t0 = time.perf_counter()
        driver.get(demo.local_url)
        wait = WebDriverWait(driver, 180)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
        before = axe_violations(driver, axe_js)
        report["axe_before_story"] = before
        upload.send_keys(str(example_photos()[0]))
        button = wait.until(
            ec.element_to_be_clickable((By.XPATH, "//button[contains(., 'Write the story')]"))
        )
        time.sleep(1)  # the upload finishes before the click sends it
        if driver.find_elements(By.CSS_SELECTOR, "#words input"):
            failures.append("a word count shows before any story")
        button.click()
        seen: list[str] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not driver.find_elements(By.CSS_SELECTOR, "#words input"):
            story_box = driver.find_elements(By.CSS_SELECTOR, "#story textarea")
            if story_box:
                seen.append(story_box[0].get_attribute("value") or "")
            time.sleep(0.05)
        words = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#words input")))
        wait.until(lambda d: (words.get_attribute("value") or "0") not in ("", "0"))
        story = driver.find_element(By.CSS_SELECTOR, "#story textarea").get_attribute("value")
        caption = driver.find_element(By.CSS_SELECTOR, "#caption textarea").get_attribute("value")
        shrank = [(a, b) for a, b in zip(seen, [*seen[1:], story], strict=True) if a and not b.startswith(a)]
        if shrank:
            failures.append(f"the story shrank while it was written: {shrank[0]!r}")
        wait.until(  # the narration
            lambda d: d.find_elements(By.CSS_SELECTOR, "a[href$='story.wav']")
        )
        wait.until(
            lambda d: any(
                "storybook" in (b.text or "").lower() and b.is_enabled()
                for b in d.find_elements(By.CSS_SELECTOR, "button, a")
            )
        )
        time.sleep(1)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(out / "lab3-serve-1280.png"))
        wide = axe_violations(driver, axe_js)
        driver.set_window_size(400, 1400)
        time.sleep(1.5)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(out / "lab3-serve-400.png"))
        narrow = axe_violations(driver, axe_js)
        report |= {"axe_1280": wide, "axe_400": narrow}
        for name, found in (("before a story", before), ("at 1280 px", wide), ("at 400 px", narrow)):
            for v in found:
                targets = [n.get("target") for n in v.get("nodes", [])][:3]
                failures.append(f"axe {name}: {v['impact']} {v['id']} ({v['help']}) at {targets}")
        column = _box(driver, ".gradio-container")
        examples = _box(driver, "#examples")
        outputs = _box(driver, "#caption")
        report["layout_400"] = {"container": column, "examples": examples, "outputs": outputs}
        if abs(column["left"] - (column["width"] - column["right"])) > 24:
            failures.append(f"at 400 px the page is off-centre: {column}")
        if not examples["top"] < outputs["top"]:
            failures.append(f"at 400 px the examples are below the outputs: {examples} vs {outputs}")
        (out / "axe.json").write_text(json.dumps(report, indent=1))
        print(f"caption: {caption}\nstory ({words.get_attribute('value')} words): {story}")
        if not (story.startswith("This is a story about") and caption):
            failures.append(f"no story: {caption!r} {story!r}")
        for f in failures:
            print(f"FAILED: {f}", file=sys.stderr)
        print(f"web-browser {'FAILED' if failures else 'OK'} in {time.perf_counter() - t0:.1f} s: {out}")
        return 1 if failures else 0
    except Exception:
        driver.save_screenshot(str(out / "lab3-serve-failed.png"))
        (out / "lab3-serve-failed.html").write_text(driver.page_source)
        raise
    finally:
        driver.quit()
        demo.close()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/web-browser")))
