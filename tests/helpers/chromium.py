"""Headless Chromium driven over its DevTools protocol, for tests that must click as a user does.

``--dump-dom`` shows a page as loaded; a single-page app (the MLflow UI) keeps state across a click that a fresh
load of the link's address would not have. This drives one tab: load, wait for text, click by text. It uses
aiohttp's websocket client (installed with Ray's dashboard) rather than a browser-automation package.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"


class Tab:
    """One headless Chromium with one tab; use as a context manager."""

    def __init__(self, profile: Path, port: int, width: int = 2400, height: int = 1200) -> None:
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.ids = itertools.count(1)
        self.session: aiohttp.ClientSession | None = None
        self.socket: aiohttp.ClientWebSocketResponse | None = None

    def __enter__(self) -> Tab:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as response:
                    pages = [t for t in json.load(response) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("headless Chromium did not open its DevTools port")
            time.sleep(0.5)
        self.loop.run_until_complete(self._connect(pages[0]["webSocketDebuggerUrl"]))
        return self

    async def _connect(self, url: str) -> None:
        self.session = aiohttp.ClientSession()
        self.socket = await self.session.ws_connect(url, max_msg_size=0)

    def __exit__(self, *exc: object) -> None:
        if self.session is not None:
            self.loop.run_until_complete(self.session.close())
        self.loop.close()
        self.process.terminate()
        self.process.wait(timeout=30)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.loop.run_until_complete(self._call(method, params))

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.socket is not None
        ident = next(self.ids)
        await self.socket.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = await self.socket.receive_json(timeout=60)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *needles: str, timeout: float = 60) -> str:
        """The page's text once it holds any of ``needles``."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if any(n in text for n in needles):
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"none of {needles} on the page after {timeout:.0f} s; it shows:\n{text[:2000]}")
            time.sleep(0.5)

    def click(self, label: str, selector: str = "a") -> None:
        """Click the first ``selector`` element whose text is ``label``, as a user would (the app's handlers run)."""
        found = self.evaluate(
            f"(() => {{ const e = [...document.querySelectorAll({json.dumps(selector)})].find(e => "
            f"e.textContent.trim() === {json.dumps(label)}); if (e) e.click(); return Boolean(e); }})()"
        )
        if not found:
            raise LookupError(f"no {selector} {label!r} on the page")
