"""The list of dicts that `samples()`, `history()` and the history reader return: apart
from history.py so that a Stack gets it without loading sqlite3."""

from __future__ import annotations

from typing import Any

__all__ = ["Records"]


class Records(list[dict[str, Any]]):
    """A list of dicts (what `pandas.DataFrame` takes) that renders as a table in notebooks."""

    def _repr_html_(self) -> str:
        import html

        if not self:
            return "<p><i>no records</i></p>"
        columns = list(self[0])
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>"
            for r in self[:500])
        more = f"<p>... {len(self) - 500} more</p>" if len(self) > 500 else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
