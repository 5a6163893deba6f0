"""Which copy of a duplicate group survives: one documented, stable rule.

Order (best first), as BigCode does for The Stack:
1. a permissive license (MIT, Apache, BSD, ...) over any other license over none;
2. more stars;
3. the smallest document id (ids are content-derived, so this never depends
   on partitioning or run order).
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

PERMISSIVE_LICENSES = (
    "mit",
    "apache-2.0",
    "bsd-2-clause",
    "bsd-3-clause",
    "bsd",
    "isc",
    "unlicense",
    "cc0-1.0",
    "zlib",
    "psf-2.0",
    "python-2.0",
    "0bsd",
    "mpl-2.0",
)


def license_rank(license_col: Column) -> Column:
    """0 for permissive, 1 for another license, 2 for none. A list-valued license string
    ("MIT,GPL-3.0") counts as permissive when any entry is."""
    entries = F.split(F.lower(F.regexp_replace(license_col, r"\s+", "")), "[,;|]")
    permissive = F.exists(entries, lambda e: e.isin(*PERMISSIVE_LICENSES))
    return (
        F.when(license_col.isNull() | (F.trim(license_col) == ""), F.lit(2))
        .when(permissive, F.lit(0))
        .otherwise(F.lit(1))
    )


def keep_key() -> Column:
    """A struct of the rule's criteria that sorts ascending in keep order (best first), for
    ordering values that are not rows of a window, such as an LSH bucket's members."""
    return F.struct(
        license_rank(F.col("license")).alias("license_rank"),
        F.col("stars").isNull().alias("no_stars"),
        (-F.coalesce(F.col("stars"), F.lit(0))).alias("minus_stars"),
        F.col("id"),
    )


def keep_order() -> list[Column]:
    """Sort keys for a window over a duplicate group: the first row is kept."""
    return [
        license_rank(F.col("license")).asc(),
        F.col("stars").desc_nulls_last(),
        F.col("id").asc(),
    ]
