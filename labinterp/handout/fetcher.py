"""The only way WeasyPrint may load anything while rendering a handout.

Handouts are built from export files we do not control. A comment or name holding
`<img src="file:///etc/passwd">` is escaped by the templates, but as a second line of
defence the fetcher serves only files that ship under `templates/` and `data:` URLs, and
refuses every other URL (file:, http:, https:, ftp:, ...) without touching the network
or the file system.
"""

from __future__ import annotations

import base64
import mimetypes
import urllib.parse
from pathlib import Path
from typing import Any

from weasyprint.urls import URLFetcher, URLFetcherResponse

from labinterp.handout.fonts import font_file
from labinterp.resources import template_dir

# Bundled assets are addressed with this scheme-less base so no real path leaks into the PDF.
ASSET_BASE = "labinterp-asset:/"
# Fonts under this asset folder are generated, not shipped (see labinterp/handout/fonts.py).
FONTS_DIR = "handout/fonts/"


class RefusedURL(ValueError):
    """A URL the handout renderer will not fetch (WeasyPrint logs it and skips the asset)."""


class SafeFetcher(URLFetcher):
    """Serve `labinterp-asset:/<path under templates/>` (and the fonts), `data:`; refuse the rest.

    `log` (optional list) records every URL asked for, allowed or not; tests use it as a spy.
    """

    def __init__(self, root: Path | None = None, log: list[str] | None = None) -> None:
        super().__init__(allowed_protocols=())
        self._root = (root or template_dir()).resolve()
        self.log = log

    def fetch(self, url: str, headers: Any = None) -> URLFetcherResponse:
        if self.log is not None:
            self.log.append(url)
        if url.startswith("data:"):
            return _data_url(url)
        if url.startswith(ASSET_BASE):
            rel = urllib.parse.unquote(url[len(ASSET_BASE) :].split("?", 1)[0].split("#", 1)[0])
            if rel.startswith(FONTS_DIR):  # made in memory from an installed font
                font = font_file(rel[len(FONTS_DIR) :])
                if font is not None:
                    return URLFetcherResponse(url, font, headers={"Content-Type": "font/ttf"})
            path = (self._root / rel.lstrip("/")).resolve()
            if path.is_relative_to(self._root) and path.is_file():
                mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                return URLFetcherResponse(url, path.read_bytes(), headers={"Content-Type": mime})
        raise RefusedURL("handouts load only bundled assets and data: URLs")


def _data_url(url: str) -> URLFetcherResponse:
    header, _, payload = url[5:].partition(",")
    parts = header.split(";")
    mime = parts[0] or "text/plain"
    if "base64" in parts[1:]:
        body = base64.b64decode(payload, validate=False)
    else:
        body = urllib.parse.unquote_to_bytes(payload)
    return URLFetcherResponse(url, body, headers={"Content-Type": mime})
