"""Rolling per-scope counts over event time, from cascaded bucket rings.

One :class:`RollingCounts` per scope (``"agent:a/tool:t"``, ``"agent:a"``,
``"tool:t"``, ``"tenant:x"``, ``"global"``). It keeps 11 counters per bucket
(see :mod:`detectors.keys`) in a few rings of equal-width buckets, finest first
(default 5x1m, 12x5m, 12x30m, 24x3h, 30x1d = 83 buckets, ~3.9 KiB).

Design (two kinds of rings, cascaded):

* ``add_event`` touches only the **fine** ring (level 0): classify once, bump
  3-4 counters in the bucket of the event time. O(1), a few microseconds.
* The fine ring's newest bucket is the *head*. When event time moves past it,
  the head bucket is rolled up (added) once into each coarse ring. So a coarse
  ring holds everything except the current head, which reads add back in.
* A window ``W`` is read from the finest level whose width ``g`` divides
  ``W``: the ``W/g`` newest buckets up to the bucket containing ``now``
  (bucket-aligned: the window covers between ``W - g`` and ``W`` seconds).
  Reads take ``now`` so idle scopes decay without any write.

Lateness: the scope's watermark is the largest event time seen. An event more
than ``lateness_s`` behind it is not counted in any window; it bumps
:attr:`RollingCounts.late` instead and ``add_event`` returns ``False``. Events
within lateness land in their own bucket (fine ring if still there, and the
coarse rings). Callers should clamp far-future timestamps before calling,
since one future event moves the watermark.

Cross-agent scopes are summed at read time by the caller (``streams.engine``): a
scope's counts never need merging.

>>> from detectors.testing import Ev
>>> rc = RollingCounts()
>>> t0 = 1_700_000_000.0
>>> for k in range(4):
...     _ = rc.add_event(Ev("tool_call", t0 + k, status="error" if k == 3 else "ok", cost_usd=0.5))
>>> _ = rc.add_event(Ev("monitor_flag", t0 + 5, severity="high"))
>>> w = rc.window_counts(300, now=t0 + 10)
>>> w["tool_calls"], w["near_misses"], w["near_misses_weighted"], w["errors"], w["cost_usd"], w["events"]
(4.0, 1.0, 5.0, 1.0, 2.0, 5.0)
>>> rc.window_counts(300, now=t0 + 3600)["tool_calls"]   # idle scope decays
0.0
>>> rc.window_counts(86400, now=t0 + 3600)["tool_calls"]
4.0
>>> rc.add_event(Ev("tool_call", t0 - 400))   # 400 s behind the watermark: late
False
>>> rc.late
1
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Iterable, Mapping, Optional

from detectors.base import Detector, StateError
from detectors.config import DEFAULT_COUNTS_CONFIG, CountsConfig
from detectors.keys import FLOAT_KEYS, INT_KEYS, KEYS, event_vector

__all__ = ["RollingCounts"]

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

    __slots__ = ("cfg", "g", "n", "ibase", "fbase", "g0", "L0", "lateness", "wmap", "weights", "dw", "ftc", "isize", "fsize", "zi", "zf", "levels",
                 "coarse", "zlevel", "zruns")

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
        #: (width, buckets, int base, float base) of every coarse level: what a roll-up walks
        self.coarse = tuple(zip(self.g[1:], self.n[1:], self.ibase[1:], self.fbase[1:]))
        #: per level, (zeroed ints, zeroed floats) of the whole ring: a clear of every slot is one slice write
        self.zlevel = [(array("I", bytes(4 * n * NI)), array(self.ftc, [0.0] * (n * NF))) for n in self.n]
        #: (zeroed ints, zeroed floats) of ``k`` consecutive slots, by ``k``: a run of stale slots is one slice write
        self.zruns = [(array("I", bytes(4 * k * NI)), array(self.ftc, [0.0] * (k * NF))) for k in range(max(self.n) + 1)]


def _zero_run(i: array, f: array, ib: int, fb: int, s0: int, k: int, n: int,
              zruns: list[tuple[array, array]]) -> None:
    """Zero ``k < n`` consecutive slots of a level (ints at ``ib``, floats at ``fb``) from slot ``s0``, wrapping."""
    end = s0 + k
    if end <= n:
        zi, zf = zruns[k]
        i[ib + s0 * NI:ib + end * NI] = zi
        f[fb + s0 * NF:fb + end * NF] = zf
        return
    zi, zf = zruns[n - s0]
    i[ib + s0 * NI:ib + n * NI] = zi
    f[fb + s0 * NF:fb + n * NF] = zf
    zi, zf = zruns[end - n]
    i[ib:ib + (end - n) * NI] = zi
    f[fb:fb + (end - n) * NF] = zf


def _layout(cfg: CountsConfig) -> _Layout:
    lay = getattr(cfg, "_layout", None)
    if lay is None:
        lay = _Layout(cfg)
        object.__setattr__(cfg, "_layout", lay)
    return lay


class RollingCounts(Detector):
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
        h0 = self._h0
        if b != h0:
            if h0 is None:
                self._h0 = b
            elif b > h0:
                self._advance(b)  # the event opens a new head bucket: counted in it below
            else:
                self._add_other(b, ev)  # within lateness, behind the head
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

    def add_counts(self, other: "RollingCounts", sign: int = 1) -> None:
        """Add (``sign=1``) or take back (``sign=-1``) every bucket of ``other`` still in this scope's rings.

        Exact for counts: taking back what was added restores every window total the rings
        still hold (float fields up to rounding; a result below zero is stored as zero).
        ``other`` must have the same layout. Its late count and watermark are not taken back.

        >>> from detectors.testing import Ev
        >>> a, b, agg = RollingCounts(), RollingCounts(), RollingCounts()
        >>> _ = a.add_event(Ev("tool_call", 1000.0)); _ = b.add_event(Ev("incident", 9000.0, severity="critical"))
        >>> agg.add_counts(a); agg.add_counts(b)
        >>> agg.window_counts(3600, 9000.0)["events"], agg.window_counts(86400, 9000.0)["events"]
        (1.0, 2.0)
        >>> agg.add_counts(a, -1); agg.window_counts(86400, 9000.0)["events"]
        1.0
        """
        oh = other._h0
        if oh is None:
            return
        lay = self._lay
        if other._lay is not lay and (other._lay.levels != lay.levels or other._lay.ftc != lay.ftc):
            raise StateError("add_counts needs two RollingCounts of the same layout")
        if self._h0 is None:
            self._h0 = oh
        elif oh > self._h0:
            self._advance(oh)
        if sign > 0 and other._wm > self._wm:
            self._wm = other._wm
        sh = self._h0
        assert sh is not None
        for j in range(len(lay.g)):
            g, n = lay.g[j], lay.n[j]
            ohj = oh if j == 0 else (oh * lay.g0) // g
            shj = sh if j == 0 else (sh * lay.g0) // g
            for c in range(max(ohj - n, shj - n) + 1, ohj + 1):
                iv, fv = other._slot_vec(j, c % n)
                self._merge_slot(j, c % n, iv, fv, sign)
        if oh != sh:  # other's head is not rolled up in its coarse rings; here it is no head any more
            hi, hf = other._slot_vec(0, oh % lay.L0)
            for j in range(1, len(lay.g)):
                g, n = lay.g[j], lay.n[j]
                c = (oh * lay.g0) // g
                if c > (sh * lay.g0) // g - n:
                    self._merge_slot(j, c % n, hi, hf, sign)

    def _merge_slot(self, j: int, slot: int, iv: list[int], fv: list[float], sign: int) -> None:
        if not any(iv) and not any(fv):
            return
        lay = self._lay
        p = lay.ibase[j] + slot * NI
        q = lay.fbase[j] + slot * NF
        i, f = self._i, self._f
        for k, x in enumerate(iv):
            if x:
                v = i[p + k] + sign * x
                i[p + k] = v if v > 0 else 0
        for k, x in enumerate(fv):
            if x:
                v = f[q + k] + sign * x
                f[q + k] = v if v > 0 else 0.0

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
        """Move the head from ``h0`` to ``b > h0``: roll the old head up, clear stale slots.

        The hot path of a scope whose events are sparse (most events open a new bucket): the head's
        non-zero counters are added into each coarse ring in counter order (the very additions
        :meth:`_add_slot` made, so the rings are bit for bit the same), then stale slots are zeroed.
        """
        lay = self._lay
        a = self._h0
        assert a is not None
        L0 = lay.L0
        i, f = self._i, self._f
        p = (a % L0) * NI
        q = (a % L0) * NF
        hi = [(k, x) for k, x in enumerate(i[p:p + NI]) if x]
        hf = [(k, x) for k, x in enumerate(f[q:q + NF]) if x]
        g0 = lay.g0
        ta, tb = a * g0, b * g0
        zruns = lay.zruns
        for j, (g, n, ib, fb) in enumerate(lay.coarse, 1):
            ca = ta // g
            s0 = ca % n
            pp = ib + s0 * NI
            for k, x in hi:
                i[pp + k] += x
            if hf:
                qq = fb + s0 * NF
                for k, x in hf:
                    f[qq + k] += x
            k = (tb // g) - ca
            if k:
                if k >= n:
                    zli, zlf = lay.zlevel[j]
                    i[ib:ib + n * NI] = zli
                    f[fb:fb + n * NF] = zlf
                else:
                    _zero_run(i, f, ib, fb, (ca + 1) % n, k, n, zruns)
        k = b - a
        if k >= L0:
            zli, zlf = lay.zlevel[0]
            i[0:L0 * NI] = zli
            f[0:L0 * NF] = zlf
        else:
            _zero_run(i, f, 0, 0, (a + 1) % L0, k, L0, zruns)
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

    def _level_sums(self, j: int, lo: int, hi: int) -> list[float]:
        """Per-key sums (storage order: ints then floats) of level ``j`` buckets ``lo..hi``.

        Strided memoryviews of the flat arrays, summed in C by ``sum``: a window is at most a
        few dozen buckets, where numpy's per-call overhead would cost more than the sums.
        """
        lay = self._lay
        n = lay.n[j]
        ib, fb = lay.ibase[j], lay.fbase[j]
        i, f = self._i, self._f
        s0 = lo % n
        cnt = min(hi - lo + 1, n)
        spans = ((s0, min(s0 + cnt, n)),) if s0 + cnt <= n else ((s0, n), (0, s0 + cnt - n))
        out = [0.0] * (NI + NF)
        with memoryview(i) as mi, memoryview(f) as mf:  # strided views: no copies
            for a, z in spans:
                ia, iz = ib + a * NI, ib + z * NI
                fa, fz = fb + a * NF, fb + z * NF
                for k in range(NI):
                    out[k] += sum(mi[ia + k:iz:NI])
                for k in range(NF):
                    out[NI + k] += sum(mf[fa + k:fz:NF])
        return out

    # ------------------------------------------------------------------ reads
    def window_vector(self, window_s: float, now: float) -> list[float]:
        """Window totals in storage order (``INT_KEYS`` then ``FLOAT_KEYS`` of :mod:`detectors.keys`)."""
        h0 = self._h0
        if h0 is None:
            return [0.0] * (NI + NF)
        lay = self._lay
        j, nb = lay.cfg.window_level(window_s)
        if now < self._wm:
            now = self._wm
        g = lay.g[j]
        head = h0 if j == 0 else (h0 * lay.g0) // g
        lo = max(int(now // g) - nb, head - lay.n[j]) + 1
        if lo > head:
            return [0.0] * (NI + NF)
        out = self._level_sums(j, lo, head)
        if j:
            hi_, hf_ = self._slot_vec(0, h0 % lay.L0)
            for k in range(NI):
                out[k] += hi_[k]
            for k in range(NF):
                out[NI + k] += hf_[k]
        return out

    def window_counts(self, window_s: float, now: float) -> dict[str, float]:
        """Totals over the window ``window_s`` ending at ``now`` (epoch s), keys ``detectors.keys.KEYS``.

        ``now`` earlier than the watermark is treated as the watermark.
        """
        v = self.window_vector(window_s, now)
        return {k: float(v[i]) for k, i in _KEY_POS}

    def window_expiry(self, window_s: float, now: float) -> float:
        """The earliest read time after ``now`` at which the window's totals change without new events.

        That is when the window's oldest non-empty bucket leaves it (``inf`` when the window is
        empty): until then :meth:`window_vector` at any later time returns what it returns at
        ``now``. An evaluator re-reads a quiet scope then, not on every tick.

        >>> from detectors.testing import Ev
        >>> rc = RollingCounts(); t0 = 1_700_000_080.0            # 40 s into a minute
        >>> _ = rc.add_event(Ev("tool_call", t0))
        >>> rc.window_expiry(300, now=t0) - t0                    # 1-min buckets: the event's bucket leaves 5 min on
        260.0
        >>> rc.window_vector(300, t0 + 259.9) == rc.window_vector(300, t0), rc.window_vector(300, t0 + 260)[0]
        (True, 0.0)
        >>> rc.window_expiry(300, now=t0 + 260)
        inf
        """
        h0 = self._h0
        if h0 is None:
            return math.inf
        lay = self._lay
        j, nb = lay.cfg.window_level(window_s)
        if now < self._wm:
            now = self._wm
        g, n = lay.g[j], lay.n[j]
        head = h0 if j == 0 else (h0 * lay.g0) // g
        lo = max(int(now // g) - nb, head - n) + 1
        if lo > head:
            return math.inf
        i = self._i
        base = lay.ibase[j] + _EVENTS_POS
        for c in range(lo, head):
            if i[base + (c % n) * NI]:
                return float((c + nb) * g)
        # the head bucket: at a coarse level the fine head is not rolled up yet, but it belongs there
        if i[base + (head % n) * NI] or (j and i[(h0 % lay.L0) * NI + _EVENTS_POS]):
            return float((head + nb) * g)
        return math.inf

    def first_seen(self, window_s: float, now: float) -> Optional[float]:
        """Start of the oldest non-empty bucket of the window ending at ``now`` (None: the window is empty).

        Read from the finest level whose ring still holds every event of the window, so the answer is
        exact to that level's bucket width (1 min for data of the last 5 min, 5 min within the last hour,
        30 min within 6 h, 3 h within 3 d, else 1 d). When the window's own oldest bucket holds data, the
        scope is at least as old as the window: ``now - window_s``. The budget period's elapsed share uses it.

        >>> from detectors.testing import Ev
        >>> rc = RollingCounts(); t0 = 1_700_000_000.0 - 1_700_000_000.0 % 86400
        >>> _ = rc.add_event(Ev("tool_call", t0 + 30)); _ = rc.add_event(Ev("tool_call", t0 + 1800))
        >>> rc.first_seen(30 * 86400, now=t0 + 1800) - t0      # 5-minute buckets hold both events
        0.0
        >>> _ = rc.add_event(Ev("tool_call", t0 + 5 * 86400 + 100))
        >>> rc.first_seen(30 * 86400, now=t0 + 5 * 86400 + 100) - t0   # read from the 1-day ring
        0.0
        >>> rc.first_seen(86400, now=t0 + 5 * 86400 + 100) - (t0 + 5 * 86400)
        60.0
        >>> RollingCounts().first_seen(300, now=t0) is None
        True
        """
        h0 = self._h0
        if h0 is None:
            return None
        lay = self._lay
        if now < self._wm:
            now = self._wm
        ev_pos = INT_KEYS.index("events")
        total = self.window_vector(window_s, now)[ev_pos]
        if total <= 0:
            return None
        start = now - window_s
        head_events = self._i[(h0 % lay.L0) * NI + ev_pos]
        for j in range(len(lay.g)):
            g, n = lay.g[j], lay.n[j]
            head = h0 if j == 0 else (h0 * lay.g0) // g
            lo = max(int(start // g) + 1, head - n + 1)
            if lo > head:
                continue
            ib = lay.ibase[j] + ev_pos
            events = self._i[ib:ib + n * NI:NI]  # the events counter of every slot of the level
            cols = [(c, events[c % n] + (head_events if j and c == head else 0)) for c in range(lo, head + 1)]
            if sum(e for _, e in cols) >= total:
                first = next(c for c, e in cols if e > 0)
                wj, nb = lay.cfg.window_level(window_s)
                if wj == j and first <= int(now // g) - nb + 1:
                    return now - window_s  # data in the window's oldest bucket: the whole window is covered
                return float(first * g)
        return None

    def all_windows(self, now: float) -> dict[int, dict[str, float]]:
        """:meth:`window_counts` for every configured window and the budget period."""
        cfg = self._lay.cfg
        return {int(w): self.window_counts(w, now) for w in tuple(cfg.windows) + (cfg.period_s,)}

    def buckets(self, level: int = 0) -> list[tuple[float, dict[str, float]]]:
        """Non-empty buckets of one level as ``(bucket start ts, counts)``, oldest first.

        Coarse levels include the not-yet-rolled-up fine head, so for every
        level the buckets sum to that level's window totals.
        """
        h0 = self._h0
        if h0 is None:
            return []
        lay = self._lay
        g, n = lay.g[level], lay.n[level]
        head = h0 if level == 0 else (h0 * lay.g0) // g
        out = []
        for c in range(head - n + 1, head + 1):
            iv, fv = self._slot_vec(level, c % n)
            if level and c == head:
                pi, pf = self._slot_vec(0, h0 % lay.L0)
                iv = [x + y for x, y in zip(iv, pi)]
                fv = [x + y for x, y in zip(fv, pf)]
            if any(iv) or any(fv):
                d = dict(zip(INT_KEYS, map(float, iv)))
                d.update(zip(FLOAT_KEYS, map(float, fv)))
                out.append((float(c * g), {k: d[k] for k in KEYS}))
        return out

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
            "v": self.STATE_VERSION,
            "levels": [list(x) for x in lay.levels],
            "ft": lay.ftc,
            "wm": self.watermark,
            "h0": self._h0,
            "late": self.late,
            "i": self._i.tolist(),
            "f": self._f.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: Optional[CountsConfig] = None) -> "RollingCounts":
        """Rebuild from :meth:`to_state`; ``config`` must have the same levels/typecode."""
        cls._check_version(state)
        cfg = config or DEFAULT_COUNTS_CONFIG
        lay = _layout(cfg)
        if [list(x) for x in state["levels"]] != lay.levels or state["ft"] != lay.ftc:
            raise StateError("RollingCounts state has a different bucket layout than the config")
        self = cls.__new__(cls)
        self._lay = lay
        wm = state["wm"]
        self._wm = -math.inf if wm is None else float(wm)
        self._h0 = None if state["h0"] is None else int(state["h0"])
        self.late = int(state["late"])
        self._i = array("I", state["i"])
        self._f = array(lay.ftc, state["f"])
        if len(self._i) != lay.isize or len(self._f) != lay.fsize:
            raise StateError("RollingCounts state has wrong ring sizes")
        return self

