"""The ids of the messages a room's sessions on this node were given, so that none is
given twice.

They are kept back to the oldest moment a catch-up may read the room from again, not by
count: a catch-up after a long stall re-reads everything since, however much that is;
the latest few thousand beyond that as well, for late messages pushed again. A
hard bound per room stays as the last resort: what it pushes out early is counted, and
such a message, re-read, is handed on again rather than risk losing it (clients drop
repeats by id).
"""

from collections import OrderedDict

from router.id_bounds import id_time_ms
from router.limits import PAST_REACH_IDS_MAX
from router.stats import EngineStatistics


class DeliveredIds:
    def __init__(self, count_max: int, stats: EngineStatistics) -> None:
        self._count_max = count_max
        self._stats = stats  # counts ids the bound forgot while a catch-up could reach them
        self._ids: OrderedDict[str, None] = OrderedDict()  # in the order given, ~id order
        # The latest ids past a catch-up's reach: a late message pushed again (a replica
        # back from a crash announces what it received late) is still known.
        self._past_reach: OrderedDict[str, None] = OrderedDict()

    def first_time(self, message_id: str) -> bool:
        """True, and remembered, if `message_id` was not given yet."""
        ids = self._ids
        if message_id in ids or message_id in self._past_reach:
            return False
        ids[message_id] = None
        if len(ids) > self._count_max:
            ids.popitem(last=False)
            self._stats.delivered_ids_evicted += 1
        return True

    def forget_before(self, time_ms: int) -> None:
        """No catch-up reads from earlier than `time_ms` any more: ids older can go. Ids
        are mostly given in time order; one given out of order waits for its turn."""
        ids, past_reach = self._ids, self._past_reach
        while ids:
            oldest = next(iter(ids))
            if id_time_ms(oldest) >= time_ms:
                break
            del ids[oldest]
            past_reach[oldest] = None
        while len(past_reach) > PAST_REACH_IDS_MAX:
            past_reach.popitem(last=False)

    def clear(self) -> None:
        self._ids.clear()
        self._past_reach.clear()

    def __len__(self) -> int:
        return len(self._ids) + len(self._past_reach)
