"""A small, safe Markdown subset for text panels (every character of the source is HTML-escaped).

Headings (``#``..``###``), paragraphs, ``-``/``*`` and ``1.`` lists, ``code``, fenced code blocks,
``**bold**``, ``*italic*`` and ``[links](https://...)`` (http, https and relative URLs only).

>>> str(render("# Hi\\n\\nSee **[runbook](/runbooks/api)** <now>"))
'<h1>Hi</h1>\\n<p>See <strong><a href="/runbooks/api">runbook</a></strong> &lt;now&gt;</p>'
"""

from __future__ import annotations

import html
import re

from markupsafe import Markup

_LINK = re.compile(r"\[([^\]]+)\]\(((?:https?://|/|\.|#)[^)\s]*)\)")


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![*\w])\*([^*]+)\*(?!\*)", r"<em>\1</em>", out)
    return _LINK.sub(lambda m: f'<a href="{html.escape(html.unescape(m.group(2)))}">{m.group(1)}</a>', out)


def render(source: str) -> Markup:
    blocks: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    list_tag = ""
    lines = source.splitlines()

    def flush() -> None:
        nonlocal list_tag
        if paragraph:
            blocks.append("<p>" + " ".join(_inline(p) for p in paragraph) + "</p>")
            paragraph.clear()
        if items:
            blocks.append(
                f"<{list_tag}>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + f"</{list_tag}>"
            )
            items.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("```"):
            flush()
            code: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                code.append(lines[i])
                i += 1
            blocks.append("<pre><code>" + html.escape("\n".join(code), quote=False) + "</code></pre>")
        elif m := re.match(r"^(#{1,3})\s+(.*)$", line):
            flush()
            level = len(m.group(1))
            blocks.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := re.match(r"^\s*(?:[-*]|(\d+)\.)\s+(.*)$", line):
            tag = "ol" if m.group(1) else "ul"
            if paragraph or (items and tag != list_tag):
                flush()
            list_tag = tag
            items.append(m.group(2))
        elif not line.strip():
            flush()
        else:
            if items:
                flush()
            paragraph.append(line.strip())
        i += 1
    flush()
    return Markup("\n".join(blocks))  # all escaped above # nosec B704
