"""Ordered, acknowledged event streams from a coordinator to each interested node.

Pushes carry a sequence number per (sender, receiver) pair; the receiver hands events on
in sequence order, holds a few that arrive early, and acknowledges cumulatively; the
sender retransmits what stays unacknowledged. A stream is named by the sender's epoch (its
incarnation): a receiver that sees a new epoch, or meets a stream for the first time,
starts at the sender's `base`, the oldest event the sender still holds. So losses,
duplicates and reordering on the network never reach a session as a gap or a repeat.
"""

from collections import OrderedDict
from dataclasses import dataclass, field

from router.limits import EARLY_EVENTS_MAX
from router.wire import Push, RoomEvent


@dataclass(slots=True)
class _Pending:
    event: RoomEvent
    sent_at: float


@dataclass(slots=True)
class OutboundStream:
    epoch: int
    next_seq: int = 1
    unacked: "OrderedDict[int, _Pending]" = field(default_factory=OrderedDict)
    # When the receiver last took something (or the stream last began to wait for it).
    progressed_at: float = 0.0

    def push(self, event: RoomEvent, now: float) -> Push:
        if not self.unacked:
            self.progressed_at = now
        seq = self.next_seq
        self.next_seq += 1
        self.unacked[seq] = _Pending(event, now)
        return Push(epoch=self.epoch, seq=seq, base=next(iter(self.unacked)), event=event)

    def acknowledge(self, epoch: int, through: int, now: float) -> None:
        if epoch != self.epoch:
            return
        while self.unacked:
            seq = next(iter(self.unacked))
            if seq > through:
                break
            del self.unacked[seq]
            self.progressed_at = now

    def due(self, now: float, retry_after_s: float, limit: int) -> list[Push]:
        """Unacknowledged pushes sent longer than `retry_after_s` ago, oldest first."""
        again: list[Push] = []
        if not self.unacked:
            return again
        base = next(iter(self.unacked))
        for seq, pending in self.unacked.items():
            if len(again) >= limit:
                break
            if now - pending.sent_at >= retry_after_s:
                pending.sent_at = now
                again.append(Push(epoch=self.epoch, seq=seq, base=base, event=pending.event))
        return again


@dataclass(slots=True)
class InboundStream:
    epoch: int
    next_seq: int
    early: dict[int, RoomEvent] = field(default_factory=dict)
    ack_due: bool = False

    @classmethod
    def starting_at(cls, push: Push) -> "InboundStream":
        return cls(epoch=push.epoch, next_seq=push.base)

    def receive(self, push: Push) -> list[RoomEvent]:
        """The events now ready to hand on, in order (none for a repeat or an early one)."""
        self.ack_due = True
        if push.base > self.next_seq:
            # The sender no longer holds what we wait for: it gave up on this stream's
            # older events, and the room catch-up covers them. Move on.
            self.early = {seq: event for seq, event in self.early.items() if seq >= push.base}
            self.next_seq = push.base
        if push.seq < self.next_seq:
            return []
        if push.seq > self.next_seq:
            if len(self.early) < EARLY_EVENTS_MAX:
                self.early[push.seq] = push.event
            return []
        ready = [push.event]
        self.next_seq += 1
        while self.next_seq in self.early:
            ready.append(self.early.pop(self.next_seq))
            self.next_seq += 1
        return ready

    @property
    def through(self) -> int:
        return self.next_seq - 1
