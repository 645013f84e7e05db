"""The picture of the report in README.md and docs/report.md: reports/<net>/index.html in headless chromium, one layer
tab with one projection method, written to docs/report_<net>.png.

    dvc repro report@lenet5 && python docs/report_screenshot.py    # --net, --tab, --method, --out

Needs Debian's chromium (`apt-get install chromium`) and Playwright for Python (in `[dev]`);
Playwright drives the system's browser, so `playwright install` (a download) is not needed.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="lenet5")
    parser.add_argument("--tab", default="conv2", help="run, wrong, or a layer name (default conv2)")
    parser.add_argument("--method", default="guided_backprop")
    parser.add_argument("--out", type=Path, help="default docs/report_<net>.png")
    args = parser.parse_args(argv)
    page_path = ROOT / "reports" / args.net / "index.html"
    if not page_path.is_file():
        sys.exit(f"error: {page_path.relative_to(ROOT)} missing: run `dvc repro report@{args.net}` first")
    if not Path(CHROMIUM).is_file():
        sys.exit(f"error: {CHROMIUM} missing: `apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    out = args.out or ROOT / "docs" / f"report_{args.net}.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{page_path.as_uri()}#{args.tab}")
            page.check(f"#methods input[value={args.method}]")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(out))
        finally:
            browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
