"""The HTML pages the Serve ingress hands out: the storefront (``/``) and the platform page
(``/platform``). Plain HTML, CSS and JavaScript in ``serving/web``, no build step; each page
gets its configuration (where the collector is, who the visitor is and their token) as one
JSON object.

The storefront plays the shop's own backend: it knows a browser by a signed cookie (its
"session"), and hands the page a short-lived token for that visitor only
(``streams/access.py``). No key is ever on a page."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from streams.access import Refused, UserTokens

WEB_DIR = Path(__file__).resolve().parent / "web"
ASSETS = {
    "storefront.js": "text/javascript",
    "platform.js": "text/javascript",
    "style.css": "text/css",
}
PLACEHOLDER = "/*STREAMRANK_CONFIG*/{}"
VISITOR_COOKIE = "streamrank_visitor"
VISITOR_AUDIENCE = "streamrank-storefront"  # a cookie is no API token, nor the reverse
VISITOR_COOKIE_TTL_S = 30 * 86400


def render(page: str, config: dict[str, Any]) -> str:
    """``page`` with ``config`` in place of its placeholder (``<`` escaped: it sits in a
    script element, so no value can close it)."""
    text = (WEB_DIR / page).read_text()
    return text.replace(PLACEHOLDER, json.dumps(config).replace("<", "\\u003c"))


def asset(name: str) -> tuple[Path, str] | None:
    """A file of ``serving/web`` by name, with its media type; None unless it is listed."""
    media = ASSETS.get(name)
    return (WEB_DIR / name, media) if media else None


def storefront_visitor(tokens: UserTokens, cookie: str | None, fresh: bool) -> str:
    """Who this browser is to the demo shop: the visitor its cookie names, or (no cookie, a
    stale or forged one, or ``fresh``) a new anonymous visitor the server picks, so a page
    can never choose to be someone who already has a profile."""
    if cookie and not fresh:
        try:
            return tokens.user_of(cookie, audience=VISITOR_AUDIENCE)
        except Refused:
            pass
    return "visitor-" + secrets.token_hex(6)
