"""Place a generated table between named markers in benchmarks/RESULTS.md (or append it)."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_block(name: str, text: str, heading: str) -> Path:
    """Replace the ``<!-- name:begin -->`` .. ``<!-- name:end -->`` block with ``text``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    body = RESULTS.read_text()
    block = f"{begin}\n{text}\n{end}"
    if begin in body:
        body = body[:body.index(begin)] + block + body[body.index(end) + len(end):]
    else:
        body += f"\n## {heading}\n\n{block}\n"
    RESULTS.write_text(body)
    return RESULTS
