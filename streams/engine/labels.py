"""Bounded label values for what the engine reports per agent and tool (``/metrics`` labels).

Label values that come from traces (agents, tools) pass through :class:`LabelCap`, so a
flood of new agent ids cannot blow up the metric series: past the cap they report as
:data:`OTHER`.
"""

from __future__ import annotations

#: the label value shared by every agent or tool past its cap
OTHER = "other"


class LabelCap:
    """Admit the first ``limit`` distinct values of a label; map the rest to ``other``.

    >>> cap = LabelCap(2)
    >>> [cap("a"), cap("b"), cap("c"), cap("a")]
    ['a', 'b', 'other', 'a']
    """

    __slots__ = ("limit", "_admitted")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._admitted:
            return value
        if len(self._admitted) < self.limit:
            self._admitted.add(value)
            return value
        return OTHER
