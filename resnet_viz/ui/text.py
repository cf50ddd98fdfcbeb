"""Untrusted text (URL values, file names, run and store messages) shown as plain text, never markup.

Streamlit renders the body of `st.warning`, `st.error`, `st.caption`, ... as GitHub-flavoured
markdown with its own extensions (`:red[...]`, `:material/icon:`, `$...$`, emoji). A value a user
typed or uploaded must not become a link, an image fetched from elsewhere, HTML, a heading or a
colour, and must not flood the page. Backslash escapes are not enough: GFM turns "https://..." and
"www...." in any text node into a live link after escapes are resolved (checked in Chromium). So
`safe_text` puts the value in an inline code span, whose content markdown shows verbatim (no
links, HTML, emphasis, math, directives or emoji), on one line and cut to `limit` characters.
"""

from __future__ import annotations

import re
import unicodedata

LIMIT = 200  # characters of untrusted text shown; the rest is cut with a note of the full length
_BACKTICKS = re.compile(r"`+")


def one_line(value: object, limit: int = LIMIT) -> tuple[str, int | None]:
    """(the text of `value` on one line, cut to `limit` characters; the full length if it was cut).

    Control and format characters (line breaks, bidirectional overrides, zero-width marks) become
    spaces and runs of blanks collapse, so a value cannot break the line it is shown in or hide text.
    """
    raw = str(value)
    head = raw[: 4 * limit]  # enough for `limit` characters after blanks collapse; never scan a huge value
    text = " ".join("".join(" " if unicodedata.category(c).startswith("C") else c for c in head).split())
    return text[:limit], len(raw) if len(text) > limit or len(raw) > len(head) else None


def safe_text(value: object, limit: int = LIMIT) -> str:
    """Markdown that shows `value` literally: an inline code span, one line, at most `limit` characters."""
    text, total = one_line(value, limit)
    cut = f" … ({total:,} characters)" if total else ""
    if not text:
        return "(empty)" + cut
    fence = "`" * (1 + max((len(run) for run in _BACKTICKS.findall(text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""  # CommonMark strips one space each side
    return f"{fence}{pad}{text}{pad}{fence}{cut}"
