"""Shared detector base: per-event ``update`` plus a JSON state round-trip.

Every detector's state is a dict of plain lists / numbers / strings (orjson
friendly) and ``to_state() -> from_state() -> to_state()`` is the identity.
Each state carries ``"v"`` (the state format version of that detector).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping, TypeVar

__all__ = ["Detector", "StateError"]

T = TypeVar("T", bound="Detector")


class StateError(ValueError):
    """A state dict that this code version / configuration cannot load."""


class Detector(abc.ABC):
    """Base class of the per-scope detectors."""

    __slots__ = ()
    STATE_VERSION: ClassVar[int] = 1

    @abc.abstractmethod
    def update(self, ev: Any) -> Any:
        """Feed one event (an :class:`~detectors.types.EventLike`)."""

    @abc.abstractmethod
    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable snapshot of the full state."""

    @classmethod
    @abc.abstractmethod
    def from_state(cls: type[T], state: Mapping[str, Any], config: Any = None) -> T:
        """Rebuild a detector from :meth:`to_state` output."""

    @classmethod
    def _check_version(cls, state: Mapping[str, Any]) -> None:
        v = state.get("v")
        if v != cls.STATE_VERSION:
            raise StateError(f"{cls.__name__}: unsupported state version {v!r}")
