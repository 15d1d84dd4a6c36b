"""The RollingCounts write path before #19 (bucket roll-ups through event_vector and _add_slot), kept verbatim
as the reference the optimised :class:`detectors.counts.RollingCounts` is compared with: same rings, bit for bit.
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Iterable, Optional


from detectors.config import DEFAULT_COUNTS_CONFIG, CountsConfig
from detectors.keys import FLOAT_KEYS, INT_KEYS, KEYS, event_vector

__all__ = ["ReferenceRollingCounts"]

NI = len(INT_KEYS)
NF = len(FLOAT_KEYS)
_ZI = [0] * NI
_ZF = [0.0] * NF
#: (key, position in the storage-order vector) in :data:`~detectors.keys.KEYS` order
_KEY_POS = tuple((k, (INT_KEYS + FLOAT_KEYS).index(k)) for k in KEYS)
#: position of the ``events`` counter (every counted event bumps it) in a bucket's ints
_EVENTS_POS = INT_KEYS.index("events")


class _Layout:
    """Per-config constants, computed once and shared by all scopes."""

    __slots__ = ("cfg", "g", "n", "ibase", "fbase", "g0", "L0", "lateness", "wmap", "weights", "dw", "ftc", "isize", "fsize", "zi", "zf", "levels")

    def __init__(self, cfg: CountsConfig) -> None:
        self.cfg = cfg
        self.levels = [list(x) for x in cfg.levels]
        self.g = [int(g) for g, _ in cfg.levels]
        self.n = [int(n) for _, n in cfg.levels]
        self.ibase, self.fbase = [], []
        acc = 0
        for n in self.n:
            self.ibase.append(acc * NI)
            self.fbase.append(acc * NF)
            acc += n
        self.isize, self.fsize = acc * NI, acc * NF
        self.g0, self.L0 = self.g[0], self.n[0]
        self.lateness = float(cfg.lateness_s)
        self.wmap = {}
        self.weights = dict(cfg.severity_weights)
        self.dw = float(cfg.default_weight)
        self.ftc = cfg.float_typecode
        self.zi = array("I", _ZI)
        self.zf = array(self.ftc, _ZF)


def _layout(cfg: CountsConfig) -> _Layout:
    lay = getattr(cfg, "_ref_layout", None)
    if lay is None:
        lay = _Layout(cfg)
        object.__setattr__(cfg, "_ref_layout", lay)
    return lay


class ReferenceRollingCounts:
    """Event-time rolling counters of one scope (see module docstring)."""

    __slots__ = ("_lay", "_wm", "_h0", "late", "_i", "_f")

    def __init__(self, config: Optional[CountsConfig] = None) -> None:
        lay = _layout(config or DEFAULT_COUNTS_CONFIG)
        self._lay = lay
        self._wm = -math.inf
        self._h0: Optional[int] = None
        #: Events dropped because they arrived more than ``lateness_s`` behind the watermark.
        self.late = 0
        self._i = array("I", bytes(4 * lay.isize))
        self._f = array(lay.ftc, bytes(lay.fsize * (4 if lay.ftc == "f" else 8)))

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> CountsConfig:
        return self._lay.cfg

    @property
    def watermark(self) -> Optional[float]:
        """Largest event time seen (``None`` when empty)."""
        return None if self._wm == -math.inf else self._wm

    @property
    def empty(self) -> bool:
        return self._h0 is None

    # ------------------------------------------------------------------ hot path
    def add_event(self, ev: Any) -> bool:
        """Count one event. Returns ``False`` if it was too late (see :attr:`late`)."""
        ts = ev.ts
        lay = self._lay
        if ts >= self._wm:
            self._wm = ts
        elif self._wm - ts > lay.lateness:
            self.late += 1
            return False
        b = int(ts // lay.g0)
        if b != self._h0:
            self._add_other(b, ev)
            return True
        p = (b % lay.L0) * 9
        i = self._i
        i[p + 8] += 1
        kind = ev.kind
        if kind == "tool_call":
            i[p] += 1
            if ev.status == "error":
                i[p + 4] += 1
        elif kind == "llm_call":
            i[p + 7] += 1
        elif kind == "monitor_flag":
            i[p + 1] += 1
            self._f[(b % lay.L0) * 2] += lay.weights.get(ev.severity, lay.dw)
        elif kind == "incident":
            i[p + 2] += 1
            if ev.severity == "critical":
                i[p + 3] += 1
        elif kind == "refusal":
            i[p + 5] += 1
        elif kind == "escalation":
            i[p + 6] += 1
        elif kind == "task_outcome":
            return True
        c = ev.cost_usd
        if c:
            self._f[(b % lay.L0) * 2 + 1] += c
        return True

    update = add_event

    def add_vector(self, ts: float, ints: Iterable[int], floats: Iterable[float] = _ZF) -> bool:
        """Count a pre-classified event/aggregate at ``ts`` (same lateness rule)."""
        lay = self._lay
        if ts >= self._wm:
            self._wm = ts
        elif self._wm - ts > lay.lateness:
            self.late += 1
            return False
        self._add_bucket(int(ts // lay.g0), list(ints), list(floats))
        return True

    # ------------------------------------------------------------------ internals
    def _add_other(self, b: int, ev: Any) -> None:
        iv, fv = event_vector(ev, self._lay.cfg)
        self._add_bucket(b, iv, fv)

    def _add_bucket(self, b: int, iv: list[int], fv: list[float]) -> bool:
        """Add a vector to fine bucket ``b``; returns False if outside every ring."""
        h0 = self._h0
        if h0 is None:
            self._h0 = h0 = b
        elif b > h0:
            self._advance(b)
            h0 = b
        if b == h0:
            self._add_slot(0, b % self._lay.L0, iv, fv)
            return True
        return self._add_past(b, iv, fv)

    def _add_slot(self, j: int, slot: int, iv: Iterable[int], fv: Iterable[float]) -> None:
        lay = self._lay
        p = lay.ibase[j] + slot * NI
        q = lay.fbase[j] + slot * NF
        i, f = self._i, self._f
        for k, x in enumerate(iv):
            if x:
                i[p + k] += x
        for k, x in enumerate(fv):
            if x:
                f[q + k] += x

    def _add_past(self, b: int, iv: list[int], fv: list[float]) -> bool:
        """Add to a fine bucket older than the head: fine ring (if kept) + coarse rings."""
        lay = self._lay
        h0 = self._h0
        assert h0 is not None
        used = False
        if b > h0 - lay.L0:
            self._add_slot(0, b % lay.L0, iv, fv)
            used = True
        t = b * lay.g0
        ht = h0 * lay.g0
        for j in range(1, len(lay.g)):
            g, n = lay.g[j], lay.n[j]
            c = t // g
            if c > ht // g - n:
                self._add_slot(j, c % n, iv, fv)
                used = True
        return used

    def _slot_vec(self, j: int, slot: int) -> tuple[list[int], list[float]]:
        lay = self._lay
        p = lay.ibase[j] + slot * NI
        q = lay.fbase[j] + slot * NF
        return self._i[p : p + NI].tolist(), self._f[q : q + NF].tolist()

    def _advance(self, b: int) -> None:
        """Move the head from ``h0`` to ``b > h0``: roll the old head up, clear stale slots."""
        lay = self._lay
        a = self._h0
        assert a is not None
        L0 = lay.L0
        hi, hf = self._slot_vec(0, a % L0)
        ta, tb = a * lay.g0, b * lay.g0
        for j in range(1, len(lay.g)):
            g, n = lay.g[j], lay.n[j]
            ca, cb = ta // g, tb // g
            self._add_slot(j, ca % n, hi, hf)
            self._clear(j, ca, min(cb - ca, n))
        self._clear(0, a, min(b - a, L0))
        self._h0 = b

    def _clear(self, j: int, after: int, k: int) -> None:
        """Zero ``k`` slots of level ``j`` following bucket ``after``."""
        if k <= 0:
            return
        lay = self._lay
        n = lay.n[j]
        ib, fb = lay.ibase[j], lay.fbase[j]
        i, f = self._i, self._f
        if k >= n:
            i[ib : ib + n * NI] = array("I", bytes(4 * n * NI))
            f[fb : fb + n * NF] = array(lay.ftc, [0.0] * (n * NF))
            return
        zi, zf = lay.zi, lay.zf
        for c in range(after + 1, after + k + 1):
            s = c % n
            i[ib + s * NI : ib + s * NI + NI] = zi
            f[fb + s * NF : fb + s * NF + NF] = zf

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """``{"v", "levels", "ft", "wm", "h0", "late", "i", "f"}`` (plain JSON).

        ``i``/``f`` are the raw rings (bucket-major, ``len(INT_KEYS)`` resp.
        ``len(FLOAT_KEYS)`` values per bucket, levels concatenated finest
        first; slot of bucket ``c`` in level ``j`` is ``c % n_j``). ``h0`` is
        the fine head bucket index (``ts // g0``). States written with a
        ``"dt"`` entry (the former delta tracker) load; the entry is ignored.
        """
        lay = self._lay
        return {
            "v": 1,
            "levels": [list(x) for x in lay.levels],
            "ft": lay.ftc,
            "wm": self.watermark,
            "h0": self._h0,
            "late": self.late,
            "i": self._i.tolist(),
            "f": self._f.tolist(),
        }
