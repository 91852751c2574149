"""The HTML pages the Serve ingress hands out: the storefront (``/``) and the platform page
(``/platform``). Plain HTML, CSS and JavaScript in ``serving/web``, no build step; each page
gets its configuration (where the collector is, the site's write key) as one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEB_DIR = Path(__file__).resolve().parent / "web"
ASSETS = {
    "storefront.js": "text/javascript",
    "platform.js": "text/javascript",
    "style.css": "text/css",
}
PLACEHOLDER = "/*STREAMRANK_CONFIG*/{}"


def render(page: str, config: dict[str, Any]) -> str:
    """``page`` with ``config`` in place of its placeholder (``<`` escaped: it sits in a
    script element, so no value can close it)."""
    text = (WEB_DIR / page).read_text()
    return text.replace(PLACEHOLDER, json.dumps(config).replace("<", "\\u003c"))


def asset(name: str) -> tuple[Path, str] | None:
    """A file of ``serving/web`` by name, with its media type; None unless it is listed."""
    media = ASSETS.get(name)
    return (WEB_DIR / name, media) if media else None
