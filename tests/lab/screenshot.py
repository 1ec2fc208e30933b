"""Take the README's screenshot of the wire lab: ``python -m tests.lab.screenshot docs/wire-lab.png``.

The same tooling as the browser tests (``tests/lab/browser.py``): a demo server, Debian's
headless Chromium, one chat streamed in, one resume cut and completed, then a PNG of the page.
"""

from __future__ import annotations

import json
import sys

from tests.lab.browser import Chromium, find_chromium, lab_server

PROMPT = "Hello, wire! Each word is one token — watch them arrive. ✓"


def main(path: str) -> None:
    browser = Chromium(find_chromium())
    try:
        with lab_server(
            "--retry-ms", "500", "--token-delay", "0.03", "--heartbeat", "0.5"
        ) as server:
            page = browser.new_page()
            page.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
            )
            page.navigate(server.url + "/")
            fields = {
                "answer-kind": "reasoning",
                "token-delay": "0.08",
                "ttft": "0.3",
                "prompt": PROMPT,
            }
            page.evaluate(
                f"for (const [k, v] of Object.entries({json.dumps(fields)}))"
                " document.getElementById(k).value = v;"
                "document.getElementById('bounds').click();"
                "document.getElementById('send').click();"
            )
            page.wait_for("document.getElementById('chat-status').dataset.state === 'done'")
            page.evaluate(
                "document.getElementById('resume-tokens').value = '24';"
                "document.getElementById('resume-delay').value = '0.05';"
                "document.getElementById('resume-start').click();"
            )
            page.wait_for("document.querySelectorAll('#resume-ids li.ok').length >= 9")
            page.evaluate("document.getElementById('resume-cut').click()")
            page.wait_for(
                "document.getElementById('resume-result').dataset.state === 'complete'",
                timeout_s=20,
            )
            page.wait_for("document.getElementById('metrics-status').dataset.updates >= 4")
            page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
            page.screenshot(path, 1400, 1000)
            page.close()
    finally:
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/wire-lab.png")
