"""The gateway side of a send: hand a client's send to the room's coordinator.

A send whose coordinator is another node is forwarded to it and retried towards whoever
coordinates the room next; when that is this node, the send is coordinated here. The
coordinator's reply, or the deadline, ends it.
"""

from router.effects import Acked, Complete, Outcome, Refused, SendPeer
from router.error_codes import ErrorCode
from router.internal_events import Coordinate, Step
from router.limits import RETRY_AFTER_S_MAX
from router.role_context import RoleContext
from router.wire import Forward, ForwardReply
from router.writes import LocalOrigin, PendingForward, SendRequest


class Forwarding:
    def __init__(
        self,
        context: RoleContext,
    ) -> None:
        self._config = context.config
        self._placement = context.placement
        self._clock = context.clock
        self._numbers = context.numbers
        self._stats = context.stats
        self._forwards: dict[int, PendingForward] = {}

    @property
    def in_flight(self) -> int:
        return len(self._forwards)

    def send(self, ticket: int, request: SendRequest, now: float) -> list[Step]:
        placement = self._placement
        coordinator = placement.coordinator(request.room)
        if coordinator is None:
            return [Complete(ticket, Refused(ErrorCode.UNAVAILABLE, placement.why_no_replica()))]
        if coordinator == placement.node_id:
            return [Coordinate(LocalOrigin(ticket), request)]
        forward_id = next(self._numbers)
        deadline = now + self._config.write_timeout_s + 2 * self._config.retry_interval_s
        self._forwards[forward_id] = PendingForward(ticket, request, deadline, coordinator, now)
        self._stats.forwards_sent += 1
        return [SendPeer(coordinator, forward_message(forward_id, request))]

    def awaits(self, forward_id: int, node: str) -> bool:
        """Is that forward open, and sent to `node` last?"""
        forward = self._forwards.get(forward_id)
        return forward is not None and forward.target == node

    def replied(self, reply: ForwardReply, now: float) -> list[Step]:
        forward = self._forwards.pop(reply.forward_id, None)
        if forward is None:
            return []
        retry_after_s = reply.retry_after_s
        if reply.joining_for_s is not None:
            # The coordinator is still joining and has been passed over: on to the next.
            placement = self._placement
            coordinator = placement.coordinator(forward.request.room)
            if coordinator == placement.node_id:
                return [Coordinate(LocalOrigin(forward.ticket), forward.request)]
            if coordinator is not None and not placement.passed_over(coordinator):
                self._forwards[reply.forward_id] = forward
                forward.target, forward.sent_at = coordinator, now
                self._stats.forwards_sent += 1
                return [SendPeer(coordinator, forward_message(reply.forward_id, forward.request))]
            # Every live replica is joining: the client may try again once this one has.
            retry_after_s = min(reply.joining_for_s, RETRY_AFTER_S_MAX)
        outcome: Outcome
        if reply.message is not None:
            self._clock.observe(reply.message.id)
            outcome = Acked(reply.message, reply.duplicate)
        else:
            outcome = Refused(ErrorCode.from_peer(reply.error), reply.reason, retry_after_s)
        return [Complete(forward.ticket, outcome)]

    def tick(self, now: float) -> list[Step]:
        steps: list[Step] = []
        retry_s = self._config.retry_interval_s
        for forward_id, forward in list(self._forwards.items()):
            if now >= forward.deadline:
                del self._forwards[forward_id]
                reason = f"the room's coordinator {forward.target} did not answer in time"
                steps.append(Complete(forward.ticket, Refused(ErrorCode.UNAVAILABLE, reason)))
                continue
            if now - forward.sent_at < retry_s:
                continue
            coordinator = self._placement.coordinator(forward.request.room)
            if coordinator == self._placement.node_id:
                # The coordinator failed and this node is next: carry the write out here.
                del self._forwards[forward_id]
                steps.append(Coordinate(LocalOrigin(forward.ticket), forward.request))
                continue
            if coordinator is not None:
                forward.target, forward.sent_at = coordinator, now
                steps.append(SendPeer(coordinator, forward_message(forward_id, forward.request)))
        return steps


def forward_message(forward_id: int, request: SendRequest) -> Forward:
    return Forward(
        forward_id,
        request.room,
        request.sender,
        request.client_msg_id,
        request.body,
        request.kind,
        request.target,
        request.reaction_key,
        request.reply_to,
        request.subject,
    )
