"""Marking rooms read as the user views them: what the chat tool tells the node."""

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeError
from tools.chat_state import ChatState

# A room on screen is marked read this long after its newest message arrived: one mark
# covers a burst.
MARK_READ_DELAY_S = 1.0

log = logging.getLogger(__name__)

RunWorker = Callable[[Coroutine[Any, Any, None]], object]


class ReadMarking:
    def __init__(
        self,
        state: ChatState,
        client: ChatClient,
        run_worker: RunWorker,
        refresh_room: Callable[[str], None],
    ) -> None:
        self.state = state
        self.client = client
        self._run_worker = run_worker  # the app's, so that its errors are seen there
        self._refresh_room = refresh_room
        self._marking: set[str] = set()  # rooms with a mark_read on its way
        self._seen: dict[str, str] = {}  # room -> the newest message shown, to mark read

    def soon(self, room: str) -> None:
        """Tell the node the user has read what the room shows, at most once a second:
        up to its newest message if the room is still on screen then, or else up to the
        newest one it showed while it was."""
        self._note_shown(room)
        if room not in self._marking:
            self._marking.add(room)
            self._run_worker(self._mark(room))

    def _note_shown(self, room: str) -> None:
        newest = self.state.last_message(room)
        if newest is not None:
            self._seen[room] = max(newest.key, self._seen.get(room, ""))

    async def _mark(self, room: str) -> None:
        try:
            await asyncio.sleep(MARK_READ_DELAY_S)
            self._marking.discard(room)
            if room == self.state.current:
                self._note_shown(room)
            up_to = self._seen.pop(room, None)
            if up_to is None or room not in self.state.rooms:
                return
            unread = await self.client.mark_read(room, up_to)
        except (NodeError, TimeoutError, ConnectionError) as error:
            log.info("could not mark %s read: %s", room, error)  # the next mark tries again
            return
        finally:
            self._marking.discard(room)
        if unread.read_up_to is not None:
            self.state.apply_read_marker(
                room, unread.read_up_to, unread.count, unread.capped, unread.through
            )
            self._refresh_room(room)
