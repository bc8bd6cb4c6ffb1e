"""The ``redis-cluster`` cache: N shards x M replicas, formed, healed and rescaled.

``topology`` holds the pure part (names, slot allocation, ``CLUSTER NODES``
parsing, the plan and the readiness check); the I/O that carries a plan out
lives with the engines.
"""

from flotilla.addons.redis_cluster.topology import (
    SLOTS,
    AddShard,
    AssignSlots,
    ClusterAction,
    EmptyShard,
    Failover,
    Forget,
    Meet,
    MoveSlots,
    NodeName,
    ObservedNode,
    Replicate,
    Reset,
    cluster_ready,
    coverage_problem,
    node_name,
    node_names,
    node_ready,
    parse_cluster_nodes,
    plan_cluster,
    self_view,
    slot_ranges,
)

__all__ = [
    "SLOTS",
    "AddShard",
    "AssignSlots",
    "ClusterAction",
    "EmptyShard",
    "Failover",
    "Forget",
    "Meet",
    "MoveSlots",
    "NodeName",
    "ObservedNode",
    "Replicate",
    "Reset",
    "cluster_ready",
    "coverage_problem",
    "node_name",
    "node_ready",
    "node_names",
    "parse_cluster_nodes",
    "plan_cluster",
    "self_view",
    "slot_ranges",
]
