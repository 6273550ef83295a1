"""``with Thing() as thing:`` for everything the harness starts: start on entry, stop on exit."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Running:
    """A base for a server or process that has ``start() -> self`` and ``stop()``."""

    def __enter__(self) -> Self:
        return self.start()  # type: ignore[attr-defined]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()  # type: ignore[attr-defined]
