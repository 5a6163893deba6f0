"""Connected components of an undirected graph, in plain Spark DataFrames.

The large-star / small-star algorithm of Kiveris et al., "Connected
Components in MapReduce and Beyond" (SoCC 2014): each round rewires every
node's edges towards the smallest id in reach, until the edge set stops
changing; it then is a forest of stars whose centres are the smallest id of
each component, which one aggregation over the edges recognises. Every step
is a window, a distinct or an aggregation over ids, so nothing is collected
on the driver and the answer does not depend on partitioning.

A graph of at most `driver_edges` distinct edges is solved on the driver instead
(union-find over its collected edges): each distributed round is several Spark
jobs, which dominate a small run. Both give the same components.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

U, V = "u", "v"

# About 20 MB of edges between two 64-character ids in the driver's Python.
DRIVER_EDGES = 100_000


def _large_star(edges: DataFrame) -> DataFrame:
    """Link every neighbour larger than u to the smallest id of u's closed neighbourhood."""
    both = edges.unionByName(edges.select(F.col(V).alias(U), F.col(U).alias(V)))
    return (
        both.withColumn("m", F.least(F.col(U), F.min(V).over(Window.partitionBy(U))))
        .where(F.col(V) > F.col(U))
        .select(F.col(V).alias(U), F.col("m").alias(V))
    )


def _small_star(edges: DataFrame) -> DataFrame:
    """Link u and its smaller neighbours to the smallest of those neighbours."""
    down = edges.select(F.greatest(U, V).alias(U), F.least(U, V).alias(V))
    ranked = down.withColumn("m", F.min(V).over(Window.partitionBy(U)))
    # (u, m) and (v, m) for each smaller neighbour v != m, in one pass.
    return ranked.select(
        F.explode(F.array(F.col(U), F.col(V))).alias(U), F.col("m").alias(V)
    ).where(F.col(U) != F.col(V))


def _is_star_forest(edges: DataFrame) -> bool:
    """True when every edge (u, v), u > v, hangs a leaf u on a root v: no node has two
    parents and no parent has one. That is the algorithm's fixed point, with each
    component one star around its smallest id, so a further round would change nothing."""
    no_parent = F.lit(None).cast(edges.schema[V].dataType)
    roles = edges.select(F.col(U).alias("node"), F.col(V).alias("parent")).unionByName(
        edges.select(F.col(V).alias("node"), no_parent.alias("parent"))
    )
    per_node = roles.groupBy("node").agg(
        F.count("parent").alias("parents"),
        F.count(F.when(F.col("parent").isNull(), 1)).alias("children"),
    )
    broken = (F.col("parents") > 1) | ((F.col("parents") == 1) & (F.col("children") > 0))
    return per_node.where(broken).isEmpty()


def components_on_driver(edges: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """(id, smallest id of its component) for every node of the (u, v) edges."""
    parent: dict[Any, Any] = {}

    def root(x: Any) -> Any:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges:
        parent.setdefault(u, u)
        parent.setdefault(v, v)
        ru, rv = root(u), root(v)
        if ru != rv:  # the smaller root stays: a root is its component's smallest id
            parent[max(ru, rv)] = min(ru, rv)
    return [(x, root(x)) for x in sorted(parent)]


def connected_components(
    edges: DataFrame, src: str = "src", dst: str = "dst", max_rounds: int = 200,
    driver_edges: int = DRIVER_EDGES,
) -> DataFrame:
    """(id, component) for every node that appears in `edges`; component = smallest id in it.

    `edges` holds undirected edges in columns `src`, `dst` (ids of one
    comparable type, e.g. strings); self-loops and repeats are allowed.
    """
    # Checkpoints are lazy: the job that first reads each materialises it (the size
    # check, then each round's star-forest check), and the checkpoint cuts the plan,
    # which would otherwise grow with every round.
    current = (
        edges.select(F.col(src).alias(U), F.col(dst).alias(V))
        .where(F.col(U).isNotNull() & F.col(V).isNotNull())
        .select(F.greatest(U, V).alias(U), F.least(U, V).alias(V))
        .distinct()
        .localCheckpoint(eager=False)
    )
    head = current.limit(driver_edges + 1).collect()
    if len(head) <= driver_edges:
        id_type = current.schema[U].dataType.simpleString()
        return edges.sparkSession.createDataFrame(
            components_on_driver([(r[U], r[V]) for r in head]), f"id {id_type}, component {id_type}")
    # Self-loops carry no link, but their node still forms a component of its own.
    singles = current.where(F.col(U) == F.col(V)).select(F.col(U).alias("id"))
    current = current.where(F.col(U) != F.col(V))
    for _ in range(max_rounds):
        if _is_star_forest(current):
            break
        current = _small_star(_large_star(current)).distinct().localCheckpoint(eager=False)
    else:
        raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
    linked = current.select(F.col(U).alias("id"), F.col(V).alias("component")).unionByName(
        current.select(F.col(V).alias("id"), F.col(V).alias("component"))
    )
    alone = singles.join(linked, "id", "left_anti").select("id", F.col("id").alias("component"))
    return linked.unionByName(alone).distinct()
