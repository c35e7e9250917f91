"""`lab3 serve` in a real browser (the opt-in nox session `web-browser`): the app with tiny random models on a
loopback port, Chromium driven by Selenium uploads scikit-learn's china.jpg, presses the button, waits for the
story and its word count, and saves a screenshot.

    python tests/lab3/web_browser.py OUT_DIR     # needs chromium + chromedriver on PATH (Debian: apt-get
                                                    # install chromium chromium-driver) and selenium
Exit 0 with the screenshot in OUT_DIR; 77 (skipped) with a message where there is no Chromium.
"""

from __future__ import annotations

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


def main(out: Path) -> int:
    paths = browser_paths()
    if paths is None:
        print(
            "web-browser SKIPPED: no Chromium and chromedriver on PATH "
            "(Debian/Ubuntu: apt-get install chromium chromium-driver)",
            file=sys.stderr,
        )
        return SKIP
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from lab3_story import ImageStoryGenerator
    from lab3_story.random_models import save_random_models
    from lab3_story.web import example_photos, launch

    out.mkdir(parents=True, exist_ok=True)
    models = save_random_models(Path(tempfile.mkdtemp(prefix="lab3-web-")))
    gen = ImageStoryGenerator(
        caption_model=str(models / "captioner"), story_model=str(models / "storyteller")
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch(gen, port=port, block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=paths[1]))
    try:
        t0 = time.perf_counter()
        driver.get(demo.local_url)
        wait = WebDriverWait(driver, 120)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
        upload.send_keys(str(example_photos()[0]))
        button = wait.until(
            ec.element_to_be_clickable((By.XPATH, "//button[contains(., 'Write the story')]"))
        )
        time.sleep(1)  # the upload finishes before the click sends it
        button.click()
        words = driver.find_element(By.CSS_SELECTOR, "#words input")
        wait.until(lambda d: (words.get_attribute("value") or "0") not in ("", "0"))
        story = driver.find_element(By.CSS_SELECTOR, "#story textarea").get_attribute("value")
        caption = driver.find_element(By.CSS_SELECTOR, "#caption textarea").get_attribute("value")
        shot = out / "lab3-serve.png"
        driver.save_screenshot(str(shot))
        print(f"caption: {caption}\nstory ({words.get_attribute('value')} words): {story}")
        print(f"web-browser OK in {time.perf_counter() - t0:.1f} s: screenshot {shot}")
        assert story.startswith("This is a story about") and caption, (caption, story)
        return 0
    finally:
        driver.quit()
        demo.close()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/web-browser")))
