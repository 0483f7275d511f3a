"""The clients of a stopped node all reconnect to another, spread over the client
library's reconnect_spread_s rather than arriving at once."""

from pathlib import Path

import pytest

from tests.reconnect_spread import measure

pytestmark = pytest.mark.processes


def test_the_clients_of_a_stopped_node_reconnect_spread_out(tmp_path: Path) -> None:
    figures = measure(tmp_path, clients=100, spread_s=1.0)
    assert figures["reconnected"] == 100, figures
    # Uniform over 1 s: a hundred arrivals all within a fifth of it would be a herd.
    assert figures["p95_s"] - figures["first_s"] > 0.2, figures
