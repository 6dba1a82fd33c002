"""The simulation feed asks the LinkState only for nodes with a pending message, in the nodes' order."""

from __future__ import annotations

import threading
from queue import Queue
from types import SimpleNamespace

from hushtype.vce_feed import add_messages_to_queue, install, pending_nodes


class _State:
    """An in-memory LinkState's store: messages by id; ``get_message_ins`` marks them delivered."""

    def __init__(self, dst: dict[str, int], stop: threading.Event) -> None:
        self.lock = threading.RLock()
        self.message_ins_store = {
            mid: SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node, delivered_at=""))
            for mid, node in dst.items()
        }
        self.asked: list[int] = []
        self.stop = stop

    def get_message_ins(self, node_id: int, limit: int | None) -> list:
        self.asked.append(node_id)
        for msg in self.message_ins_store.values():
            if msg.metadata.dst_node_id == node_id and msg.metadata.delivered_at == "":
                msg.metadata.delivered_at = "now"
                if not pending_nodes(self):
                    self.stop.set()
                return [msg]
        return []


def test_feed_asks_only_pending_nodes_in_mapping_order() -> None:
    # Prepare: 1,000 nodes, messages for nodes 7, 3 and 7 again (two rounds of asks for node 7)
    stop = threading.Event()
    state = _State({"m1": 7, "m2": 3, "m3": 7}, stop)
    nodes = {n: n for n in range(1000)}
    queue: Queue = Queue()
    # Execute: the feed runs until every message is delivered
    add_messages_to_queue(state, queue, nodes, stop)
    # Assert: three messages queued, and only nodes 3 and 7 were ever asked, in the mapping's order
    assert queue.qsize() == 3
    assert state.asked == [3, 7, 7]


def test_feed_is_installed_into_flower() -> None:
    from flwr.server.superlink.fleet.vce import vce_api

    install()
    assert vce_api.add_messages_to_queue is add_messages_to_queue
    assert pending_nodes(object()) is None  # another LinkState: Flower's own per-node loop
