"""Sections of HTML and Markdown: the text under each heading, with its heading path and anchor.

A manual's page is rarely about one thing: a reference page has Synopsis, Parameters, Notes and
Examples, a library page one section per function group. Chunks that cross a heading mix topics,
and a citation that can only say "struct.html" sends the reader hunting. So structured files are
cut at their headings first; each section becomes one document with

- ``section``: the heading path, ``"struct — Interpret bytes… > Format Strings > Byte Order…"``;
- ``anchor``: the id a browser scrolls to (``struct.html#byte-order-size-and-alignment``), from the
  heading itself, an ``<a id>`` inside it, or the ``<section>``/``<div>`` it opens; for Markdown the
  GitHub-style slug of the heading.

What a reader does not read is left out: scripts and styles, and navigation (``<nav>``, elements
with ``role="navigation"``/``"search"``, Sphinx's sidebar and "related" bars, DocBook's navheader,
navfooter and tables of contents). The boxes' own headings ("Note", "Warning", ...) are text of the
section they sit in, not sections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

HIDDEN = {"script", "style", "noscript", "template", "head", "svg", "nav", "button", "form"}
SKIP_ROLES = {"navigation", "search", "banner", "contentinfo"}
SKIP_CLASSES = {"navheader", "navfooter", "sphinxsidebar", "related", "toc", "footer", "headerlink",
                "skip-link", "breadcrumbs", "mobile-nav"}
BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header",
         "footer", "pre", "blockquote", "table", "ul", "ol", "dd", "dt", "hr", "title", "main", "dl"}
CONTAINERS = {"section", "div", "article", "main"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
BOX_HEADINGS = {"note", "tip", "warning", "caution", "important", "see also", "danger", "attention", "hint"}


@dataclass
class Section:
    path: list[str]
    anchor: str
    parts: list[str] = field(default_factory=list)
    markdown: bool = False  # keep the text's own spacing (code blocks)

    @property
    def text(self) -> str:
        if self.markdown:
            return "".join(self.parts).strip()
        text = re.sub(r"[ \t\r\f\v]+", " ", "".join(self.parts))
        return re.sub(r"\s*\n\s*", "\n", text).strip()


class _Sections(HTMLParser):
    """Visible text of an HTML page, cut into sections at h1-h6."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.sections = [Section([], "")]
        self._skip: list[tuple[str, int]] = []  # (tag, nesting) of the skipped element we are inside
        self._title = False
        self._heading: tuple[int, list[str], str] | None = None  # (level, text parts, anchor)
        self._container_id = ""  # id of the last container opened since the last heading
        self._levels: list[tuple[int, str]] = []  # the open heading path: (level, text)
        self._pre = 0  # inside <pre>: line breaks are the text's own

    # --- skipping ----------------------------------------------------------------------------------
    def _skips(self, tag: str, attrs: dict) -> bool:
        if tag in HIDDEN or attrs.get("aria-hidden") == "true" or "hidden" in attrs:
            return True
        if (attrs.get("role") or "") in SKIP_ROLES:
            return True
        return bool(SKIP_CLASSES & set((attrs.get("class") or "").split()))

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "title":
            self._title = True
        if self._skip:
            name, depth = self._skip[-1]
            if tag == name and tag not in VOID:
                self._skip[-1] = (name, depth + 1)
            return
        if tag == "pre":
            self._pre += 1
        if self._skips(tag, attrs):
            if tag not in VOID:
                self._skip.append((tag, 1))
            return
        if tag in CONTAINERS and attrs.get("id"):
            self._container_id = attrs["id"]
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = (int(tag[1]), [], attrs.get("id") or "")
            return
        if self._heading is not None and tag == "a" and attrs.get("id") and not self._heading[2]:
            self._heading = (self._heading[0], self._heading[1], attrs["id"])
        if tag in BLOCK:
            self._text("\n")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag == "title":
            self._title = False
        if self._skip:
            name, depth = self._skip[-1]
            if tag == name:
                self._skip[-1] = (name, depth - 1)
                if depth - 1 == 0:
                    self._skip.pop()
            return
        if tag == "pre" and self._pre:
            self._pre -= 1
        if self._heading is not None and re.fullmatch(r"h[1-6]", tag):
            self._close_heading()
            return
        if tag in BLOCK:
            self._text("\n")
        elif tag in ("td", "th"):
            self._text(" | ")

    def handle_data(self, data):
        if self._title:
            self.title += data
        elif self._skip:
            return
        elif self._heading is not None:
            self._heading[1].append(data)
        else:
            self._text(data if self._pre else data.replace("\n", " "))

    def _text(self, data: str) -> None:
        self.sections[-1].parts.append(data)

    def _close_heading(self) -> None:
        level, parts, anchor = self._heading
        self._heading = None
        text = " ".join("".join(parts).replace("¶", " ").split())
        if not text:
            return
        if text.lower().rstrip(":") in BOX_HEADINGS:  # a box's title: text of the current section
            self._text(f"\n{text}:\n")
            return
        while self._levels and self._levels[-1][0] >= level:
            self._levels.pop()
        self._levels.append((level, text))
        anchor = anchor or self._container_id
        self._container_id = ""
        self.sections.append(Section([t for _, t in self._levels], anchor, [text, "\n"]))


def html_sections(text: str) -> tuple[str, list[Section]]:
    """(page title, sections with text, in reading order) of an HTML page."""
    parser = _Sections()
    parser.feed(text)
    parser.close()
    return " ".join(parser.title.split()), _merged(parser.sections)


def _merged(sections: list[Section]) -> list[Section]:
    """Sections with text; a heading directly followed by a sub-heading is kept in its child's text."""
    out: list[Section] = []
    carry, first = "", None
    for s in sections:
        body = s.text
        heading = s.path[-1] if s.path else ""
        if not body or body.lstrip("#").strip() == heading:
            carry = f"{carry}\n{heading}".strip() if heading else carry
            first = first or s
            continue
        if carry:
            s.parts.insert(0, carry + "\n")
            carry = ""
        out.append(s)
    if not out and first is not None:  # headings only (a contents page): its headings are its text
        out.append(Section(first.path, first.anchor, [carry], first.markdown))
    return out


_FENCE = re.compile(r"^\s*(```|~~~)")
_ATX = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def markdown_sections(text: str) -> list[Section]:
    """Sections of a Markdown text at its ATX headings (``#`` ... ``######``), code fences respected."""
    sections = [Section([], "", markdown=True)]
    levels: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    fence = None
    for line in text.splitlines(keepends=True):
        m = _FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
        heading = None if fence or m else _ATX.match(line)
        if heading is None:
            sections[-1].parts.append(line)
            continue
        level, title = len(heading.group(1)), heading.group(2).strip()
        while levels and levels[-1][0] >= level:
            levels.pop()
        levels.append((level, title))
        anchor = slug(title)
        if anchor in seen:  # GitHub numbers repeated headings: intro, intro-1, ...
            seen[anchor] += 1
            anchor = f"{anchor}-{seen[anchor]}"
        else:
            seen[anchor] = 0
        sections.append(Section([t for _, t in levels], anchor, [line], markdown=True))
    return _merged(sections)
