"""Who is in a room: this node's sessions, and every live node's, asked at once.

The answer comes when every node asked has replied or the read deadline passed, so a
node that does not answer only leaves its users out.
"""

from collections.abc import Callable
from dataclasses import dataclass

from router.effects import Complete, SendPeer, Users
from router.internal_events import Step
from router.role_context import RoleContext
from router.wire import WhoReply, WhoRequest


@dataclass(slots=True)
class _Who:
    ticket: int
    deadline: float
    waiting: set[str]
    users: set[str]


class WhoIsThere:
    def __init__(
        self,
        context: RoleContext,
        *,
        local_users: Callable[[str], list[str]],
    ) -> None:
        self._config = context.config
        self._placement = context.placement
        self._numbers = context.numbers
        self._local_users = local_users
        self._asks: dict[int, _Who] = {}

    def ask(self, ticket: int, room: str, now: float) -> list[Step]:
        users = set(self._local_users(room))
        others = self._placement.alive - {self._placement.node_id}
        if not others:
            return [Complete(ticket, Users(sorted(users)))]
        request_id = next(self._numbers)
        deadline = now + self._config.read_timeout_s
        self._asks[request_id] = _Who(ticket, deadline, set(others), users)
        return [SendPeer(node, WhoRequest(request_id, room)) for node in sorted(others)]

    def answer(self, sender: str, request: WhoRequest) -> list[Step]:
        return [SendPeer(sender, WhoReply(request.request_id, self._local_users(request.room)))]

    def replied(self, sender: str, reply: WhoReply) -> list[Step]:
        who = self._asks.get(reply.request_id)
        if who is None:
            return []
        who.users.update(reply.users)
        who.waiting.discard(sender)
        if who.waiting:
            return []
        del self._asks[reply.request_id]
        return [Complete(who.ticket, Users(sorted(who.users)))]

    def tick(self, now: float) -> list[Step]:
        steps: list[Step] = []
        for request_id in [key for key, who in self._asks.items() if now >= who.deadline]:
            who = self._asks.pop(request_id)
            steps.append(Complete(who.ticket, Users(sorted(who.users))))
        return steps
