"""Flower's simulation message feed, without one scan of the message store per node.

Flower 1.42's simulation engine feeds its Ray workers from a driver thread
(``flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue``) that, every 0.1 s, asks the
LinkState for the pending message of *each* of the N nodes, and each ask scans every stored message
(with its TTL and federation checks): N x messages checks a pass. With 777 nodes and a round of 20
messages in flight, py-spy found that thread on the CPU ~100% of the time, in the driver, holding the GIL
against the server thread and the threads that submit messages to Ray, and taking one of the machine's
two cores from the devices' training.

``add_messages_to_queue`` below finds the nodes that have an undelivered message in one pass over the
store and asks only for those, through the same ``get_message_ins`` call, in the nodes' original order:
the same messages reach the same queue. A LinkState without the in-memory store falls back to Flower's
own loop. ``install()`` puts it in place for runs started in this process (``hushtype.simulation``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from queue import Queue
from typing import Any

__all__ = ["add_messages_to_queue", "install", "pending_nodes"]

POLL_SECONDS = 0.1  # Flower's own interval


def pending_nodes(state: Any) -> set[int] | None:
    """The destination nodes of the undelivered messages in an in-memory LinkState (None: not one)."""
    store = getattr(state, "message_ins_store", None)
    lock = getattr(state, "lock", None)
    if not isinstance(store, dict) or lock is None:
        return None
    with lock:
        return {m.metadata.dst_node_id for m in store.values() if m.metadata.delivered_at == ""}


def add_messages_to_queue(
    state: Any, queue: Queue, nodes_mapping: dict[int, int], f_stop: threading.Event
) -> None:
    """Put the LinkState's pending messages in the workers' queue until ``f_stop`` (Flower's signature)."""
    while not f_stop.is_set():
        pending = pending_nodes(state)
        nodes: Iterable[int] = (
            nodes_mapping.keys() if pending is None else [n for n in nodes_mapping if n in pending]
        )
        for node_id in nodes:
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        f_stop.wait(POLL_SECONDS)


def install() -> None:
    """Make Flower's simulation engine use ``add_messages_to_queue`` (idempotent)."""
    from flwr.server.superlink.fleet.vce import vce_api

    if not hasattr(vce_api, "add_messages_to_queue"):
        raise RuntimeError("flwr's vce_api has no add_messages_to_queue: the pinned flwr version changed")
    vce_api.add_messages_to_queue = add_messages_to_queue
