"""Untrusted text (URL values, file names, run and store messages) shown as plain text, never markup.

Streamlit renders the body of `st.warning`, `st.error`, `st.caption`, ... as GitHub-flavoured
markdown with its own extensions (`:red[...]`, `:material/icon:`, `$...$`). A value a user typed or
uploaded must not become a link, an image fetched from elsewhere, HTML, a heading or a colour, and
must not flood the page. `safe_text` makes it one line of at most `limit` characters and
backslash-escapes (CommonMark allows an escape before any ASCII punctuation) every character that
can start markup on one line: code, emphasis, links and images, HTML and autolinks, entities, math,
Streamlit directives and emoji, the "http:", "www." and e-mail autolinks of GFM, and a block marker
at the start. Punctuation that is plain text there (". , ; ( ) - / ' ?") stays as it is, so a
message reads the same in the page and in its markdown source.
"""

from __future__ import annotations

import re
import unicodedata

LIMIT = 200  # characters of untrusted text shown; the rest is cut with a note of the full length
_ESCAPE = {ord(c): "\\" + c for c in "\\`*_~[]<>&$:@#|"}
_WWW = re.compile(r"\b(www)\.", re.IGNORECASE)  # GFM links "www.x.y" without a scheme
_BLOCK_START = re.compile(r"([0-9]*)([-+=.)])")  # "- x", "+ x", "1. x", "2) x" at the very start: a list


def safe_text(value: object, limit: int = LIMIT) -> str:
    """`value` as markdown that renders as its literal text: one line, at most `limit` characters.

    Control and format characters (line breaks, bidirectional overrides, zero-width marks) become
    spaces and runs of blanks collapse, so a value cannot start a new markdown block or hide text.
    """
    raw = str(value)
    head = raw[: 4 * limit]  # enough for `limit` characters after blanks collapse; never scan a huge value
    text = " ".join("".join(" " if unicodedata.category(c).startswith("C") else c for c in head).split())
    cut = f"… ({len(raw):,} characters)" if len(text) > limit or len(raw) > len(head) else ""
    text = _WWW.sub(r"\1\\.", text[:limit].translate(_ESCAPE))
    if start := _BLOCK_START.match(text):
        text = f"{start[1]}\\{start[2]}{text[start.end() :]}"
    return text + cut
