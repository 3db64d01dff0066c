"""HTML → text the chunker can split: boilerplate dropped, blocks as paragraphs,
``h1``–``h6`` as Markdown ``#`` lines, list items as ``- `` lines.

The content root is ``<main>`` when the page has one, else ``<body>``. The title is
``<title>``, else the first ``<h1>``, else the fallback.
"""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

from ingest.errors import UnreadableFile
from ingest.formats import Extracted
from ingest.formats.text import TITLE_MAX_CHARS, decode_text

#: elements (and ARIA roles) that are page furniture, never content
BOILERPLATE = ", ".join(
    [
        "script", "style", "nav", "header", "footer", "aside", "form", "noscript", "svg",
        "template", "iframe", "button", "select", "[hidden]", '[aria-hidden="true"]',
        '[role="navigation"]', '[role="banner"]', '[role="contentinfo"]',
    ]
)  # fmt: skip
BLOCKS = frozenset(
    """address article blockquote body caption center dd details dialog div dl dt fieldset
    figcaption figure hr li main menu ol p section summary table tbody tfoot thead tr ul""".split()
)
HEADINGS = {f"h{n}": n for n in range(1, 7)}
CELLS = frozenset({"td", "th"})
_SPACE = re.compile(r"\s+")


def extract_html(raw: bytes, name: str, fallback_title: str) -> Extracted:
    tree = LexborHTMLParser(decode_text(raw, name))
    for node in tree.css(BOILERPLATE):
        node.decompose()
    root = tree.css_first("main") or tree.body
    text = _Blocks().render(root) if root is not None else ""
    if not text:
        raise UnreadableFile(name, "no text after removing markup")
    return Extracted(title=_title(tree) or fallback_title, text=text)


def _title(tree: LexborHTMLParser) -> str:
    for selector in ("title", "h1"):
        node = tree.css_first(selector)
        if node is not None:
            title = _collapse(node.text())
            if title:
                return title[:TITLE_MAX_CHARS]
    return ""


def _collapse(text: str) -> str:
    return " ".join(text.split())


class _Blocks:
    """Walks the tree (iteratively: pages can nest deeper than Python's recursion limit)."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, str]] = []  # (kind, text); kind "li" joins with one newline
        self.inline: list[str] = []
        self.prefix = ""

    def render(self, root: LexborNode) -> str:
        stack: list[tuple[LexborNode, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            tag = node.tag or ""
            if leaving:
                self._leave(tag)
            elif node.is_text_node:
                # source newlines are spaces in HTML; only <br> breaks a line
                self.inline.append(_SPACE.sub(" ", node.text_content or ""))
            elif self._enter(node, tag):
                stack.append((node, True))
                stack.extend(
                    (child, False) for child in reversed(list(node.iter(include_text=True)))
                )
        self._flush()
        out: list[str] = []
        for i, (kind, text) in enumerate(self.blocks):
            if i:
                out.append("\n" if kind == "li" and self.blocks[i - 1][0] == "li" else "\n\n")
            out.append(text)
        return "".join(out)

    def _enter(self, node: LexborNode, tag: str) -> bool:
        """Handle the opening of an element; True when its children are to be walked."""
        if tag in HEADINGS:
            self._flush()
            heading = _collapse(node.text())
            if heading:
                self.blocks.append(("h", f"{'#' * HEADINGS[tag]} {heading}"))
            return False
        if tag == "pre":
            self._flush()
            code = node.text().strip("\n")
            if code.strip():
                self.blocks.append(("pre", code))
            return False
        if tag == "br":
            self.inline.append("\n")
        elif tag in BLOCKS:
            self._flush()
            if tag == "li":
                self.prefix = "- "
        return True

    def _leave(self, tag: str) -> None:
        if tag in BLOCKS:
            self._flush("li" if tag == "li" else "p")
        elif tag in CELLS:
            self.inline.append(" ")

    def _flush(self, kind: str = "p") -> None:
        lines = (_collapse(line) for line in "".join(self.inline).split("\n"))
        text = "\n".join(line for line in lines if line)
        self.inline.clear()
        if text:
            self.blocks.append(("li" if self.prefix else kind, self.prefix + text))
            self.prefix = ""
