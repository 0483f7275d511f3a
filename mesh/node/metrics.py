"""Prometheus metrics of one node.

Counters the node already keeps (sessions, messages, errors, storage, peers) are read at
scrape time by a collector, so the hot paths carry no metrics code; the two latencies a
counter cannot express are histograms fed by hooks (send-to-ack in the gateway, commit
time and batch size in the storage writer). Every name has the `meshchat_` prefix and its
unit; counters end in `_total`.
"""

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mesh.wire.protocol import StatusReply

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PEER_STATES = ("alive", "suspect", "dead", "left")


class NodeMetrics:
    def __init__(self, status: Callable[[], StatusReply]) -> None:
        # No auto-describe: the node collector can only be read once the node runs.
        self.registry = CollectorRegistry(auto_describe=False)
        self.send_ack_seconds = Histogram(
            "meshchat_send_ack_seconds",
            "Time from receiving a send to acknowledging it (stored on disk).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "meshchat_storage_commit_seconds",
            "Time to commit one batch of writes to SQLite, fsync included.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.commit_batch_writes = Histogram(
            "meshchat_storage_commit_batch_writes",
            "Writes carried by one commit.",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1024),
            registry=self.registry,
        )
        self.registry.register(_NodeCollector(status))

    def observe_ack(self, seconds: float) -> None:
        self.send_ack_seconds.observe(seconds)

    def observe_commit(self, seconds: float, writes: int) -> None:
        self.commit_seconds.observe(seconds)
        self.commit_batch_writes.observe(writes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# counter name in status -> (metric name, help)
_COUNTERS = {
    "messages_stored": ("meshchat_messages_accepted_total", "Messages stored by this node."),
    "messages_delivered": (
        "meshchat_messages_delivered_total",
        "Messages pushed to this node's sessions.",
    ),
    "client_sessions_opened": ("meshchat_client_sessions_opened_total", "Client sessions opened."),
    "client_sessions_cut_off": (
        "meshchat_client_sessions_cut_off_total",
        "Sessions closed for reading too slowly.",
    ),
    "client_requests": ("meshchat_client_requests_total", "Requests received from clients."),
    "sends_refused_busy": (
        "meshchat_sends_refused_busy_total",
        "Sends refused as unavailable after waiting for room in flight.",
    ),
    "storage_commits": ("meshchat_storage_commits_total", "SQLite commits."),
    "storage_failures": ("meshchat_storage_failures_total", "Commits that failed."),
    "storage_duplicates": (
        "meshchat_storage_duplicates_total",
        "Sends recognised as retries and not stored again.",
    ),
    "peer_frames_rejected": (
        "meshchat_peer_frames_rejected_total",
        "Peer frames rejected as malformed.",
    ),
    "peer_handshake_failures": (
        "meshchat_peer_handshake_failures_total",
        "Connections to the peer port that failed.",
    ),
    "peer_records_untrusted": (
        "meshchat_peer_records_untrusted_total",
        "Member records about node ids this node does not trust, ignored.",
    ),
    "peer_incarnations_refused": (
        "meshchat_peer_incarnations_refused_total",
        "Member records with an incarnation beyond the allowed clock skew, ignored.",
    ),
    "peer_hearsay_ignored": (
        "meshchat_peer_hearsay_ignored_total",
        "Gossip that a node left while its own heartbeats are heard, ignored.",
    ),
    "peer_ids_refused": (
        "meshchat_peer_ids_refused_total",
        "Peer room messages carrying ids or times beyond the allowed clock skew.",
    ),
    "client_tls_handshake_failures": (
        "meshchat_client_tls_handshake_failures_total",
        "Client and HTTPS connections whose TLS handshake failed.",
    ),
    "heartbeats_sent": ("meshchat_heartbeats_sent_total", "Heartbeats sent to peers."),
    "heartbeats_received": ("meshchat_heartbeats_received_total", "Heartbeats received."),
    "writes_coordinated": (
        "meshchat_writes_coordinated_total",
        "Sends this node coordinated (assigned an id and replicated).",
    ),
    "writes_acknowledged": (
        "meshchat_writes_acknowledged_total",
        "Coordinated sends that reached W copies on disk.",
    ),
    "writes_failed": (
        "meshchat_writes_failed_total",
        "Coordinated sends that did not reach W copies in time (answered unavailable).",
    ),
    "writes_refused_busy": (
        "meshchat_writes_refused_busy_total",
        "Sends a room's coordinator refused: its most writes open, or a member node far behind.",
    ),
    "forwards_sent": (
        "meshchat_forwards_sent_total",
        "Sends this node, as gateway, handed to another node coordinating the room.",
    ),
    "reads_served": ("meshchat_reads_served_total", "History reads answered for other nodes."),
    "read_repairs": (
        "meshchat_read_repairs_total",
        "Messages sent to replicas found missing them during a read.",
    ),
    "pushes_sent": ("meshchat_pushes_sent_total", "Room events pushed to interested nodes."),
    "push_retransmits": (
        "meshchat_push_retransmits_total",
        "Pushes sent again for want of an acknowledgement.",
    ),
    "room_catch_ups": (
        "meshchat_room_catch_ups_total",
        "Rooms re-read because this node may have missed pushes.",
    ),
    "anti_entropy_rounds": (
        "meshchat_anti_entropy_rounds_total",
        "Rooms compared with another replica.",
    ),
    "anti_entropy_buckets_compared": (
        "meshchat_anti_entropy_buckets_compared_total",
        "Buckets found to differ and compared id by id.",
    ),
    "anti_entropy_messages_sent": (
        "meshchat_anti_entropy_messages_sent_total",
        "Messages sent to a replica that lacked them.",
    ),
    "memberships_spread": (
        "meshchat_memberships_spread_total",
        "Room membership changes acknowledged by one of the user's nodes.",
    ),
    "memberships_spread_abandoned": (
        "meshchat_memberships_spread_abandoned_total",
        "Room membership changes one of the user's nodes never acknowledged.",
    ),
    "anti_entropy_messages_deferred": (
        "meshchat_anti_entropy_messages_deferred_total",
        "Missing messages found past the send budget, left to a later round.",
    ),
    "hints_stored": ("meshchat_hints_stored_total", "Copies kept as hints for a down replica."),
    "hints_replayed": (
        "meshchat_hints_replayed_total",
        "Hints handed back to their owner and deleted.",
    ),
    "hints_dropped": (
        "meshchat_hints_dropped_total",
        "Hints dropped past their bounds (age, count, bytes), left to anti-entropy.",
    ),
    "late_posts": (
        "meshchat_late_posts_total",
        "Messages pushed to a room again because a replica got them only by repair.",
    ),
    "interest_dropped": (
        "meshchat_interest_dropped_total",
        "Nodes given up as push targets for leaving too many pushes unacknowledged.",
    ),
    "room_storage_failures": (
        "meshchat_room_storage_failures_total",
        "Storage reads and writes of the room engine that failed (each ended its request).",
    ),
}

# gauge name in status -> (metric name, help)
_GAUGES = {
    "writes_in_flight": ("meshchat_writes_in_flight", "Coordinated sends not yet settled."),
    "pushes_unacknowledged": (
        "meshchat_pushes_unacknowledged",
        "Pushes waiting for an interested node's acknowledgement.",
    ),
    "interest_registrations": (
        "meshchat_interest_registrations",
        "Other nodes' interest in rooms this node holds (room, node pairs).",
    ),
    "forwards_in_flight": (
        "meshchat_forwards_in_flight",
        "Sends handed to another node's coordinator, not yet answered.",
    ),
    "sends_in_flight": (
        "meshchat_sends_in_flight",
        "Sends admitted by this node's doors and not yet answered.",
    ),
    "sends_waiting_for_room": (
        "meshchat_sends_waiting",
        "Sends waiting at the door for the node's in-flight bound.",
    ),
    "storage_tokens_waiting": (
        "meshchat_room_storage_waiting",
        "Storage reads and writes of the room engine not yet ended.",
    ),
}


class _NodeCollector(Collector):
    def __init__(self, status: Callable[[], StatusReply]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        counters = status.counters
        for key, (name, text) in _COUNTERS.items():
            family = CounterMetricFamily(name.removesuffix("_total"), text)
            family.add_metric([], counters.get(key, 0))
            yield family
        errors = CounterMetricFamily(
            "meshchat_client_errors", "Errors answered to clients, by code.", labels=["code"]
        )
        for key, value in sorted(counters.items()):
            if key.startswith("client_errors_"):
                errors.add_metric([key.removeprefix("client_errors_")], value)
        yield errors
        for key, (name, text) in _GAUGES.items():
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], counters.get(key, 0))
            yield gauge
        sessions = GaugeMetricFamily("meshchat_client_sessions", "Client sessions open now.")
        sessions.add_metric([], counters.get("client_sessions_open", 0))
        yield sessions
        states = GaugeMetricFamily(
            "meshchat_peer_state",
            "1 for each peer's current state as this node sees it.",
            labels=["peer", "state"],
        )
        dropped = CounterMetricFamily(
            "meshchat_peer_messages_dropped",
            "Messages to a peer dropped because it was gone or too slow.",
            labels=["peer"],
        )
        for member in status.members:
            if member.id == status.node:
                continue
            for state in PEER_STATES:
                states.add_metric([member.id, state], 1.0 if member.state == state else 0.0)
            dropped.add_metric([member.id], member.dropped)
        yield states
        yield dropped
