"""Auto-paginating lists: iterate and every page is fetched as it is needed, following
`has_more` with `after` = the last item's id."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Generic, TypeVar

from trainyard.sdk._models import Page, TrainyardModel

T = TypeVar("T", bound=TrainyardModel)

__all__ = ["AsyncPaginator", "SyncPaginator"]


def _next_cursor(page: Page[T]) -> str | None:
    # An empty page that claims more would loop for ever; stop instead.
    if not page.has_more or not page.data:
        return None
    return str(page.data[-1].id)  # type: ignore[attr-defined]


class SyncPaginator(Generic[T]):
    """Iterates over every item of every page. Each `iter()` starts again from `after`."""

    def __init__(self, fetch: Callable[[str | None], Page[T]], after: str | None = None) -> None:
        self._fetch = fetch
        self._after = after

    def pages(self) -> Iterator[Page[T]]:
        cursor = self._after
        while True:
            page = self._fetch(cursor)
            yield page
            cursor = _next_cursor(page)
            if cursor is None:
                return

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from page.data

    def to_list(self) -> list[T]:
        return list(self)


class AsyncPaginator(Generic[T]):
    """`async for item in client.jobs.list(...)`; nothing is fetched until iteration starts."""

    def __init__(self, fetch: Callable[[str | None], Awaitable[Page[T]]], after: str | None = None) -> None:
        self._fetch = fetch
        self._after = after

    async def pages(self) -> AsyncIterator[Page[T]]:
        cursor = self._after
        while True:
            page = await self._fetch(cursor)
            yield page
            cursor = _next_cursor(page)
            if cursor is None:
                return

    async def _items(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.data:
                yield item

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def to_list(self) -> list[T]:
        return [item async for item in self]
