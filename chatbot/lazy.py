"""Built on first use, once per instance: the one lazy-initialisation helper.

Clients, the model session and the chat service are expensive and shared by every request
thread, so each lives in a ``Lazy`` that builds it the first time it is asked for and hands
the same object to every later caller (Google's "lazy globals" pattern, with a lock so two
threads of a cold instance cannot build it twice).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Lazy"]


class Lazy(Generic[T]):
    """A value built by ``factory`` on the first ``get()`` and reused afterwards."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """The value, built now if nobody has asked for it yet."""
        value = self._value
        if value is None:
            with self._lock:
                value = self._value
                if value is None:
                    value = self._value = self._factory()
        return value

    def reset(self) -> T | None:
        """Forget the value (the next ``get()`` builds a new one) and return the old one."""
        with self._lock:
            old, self._value = self._value, None
        return old
