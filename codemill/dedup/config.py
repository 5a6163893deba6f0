"""Settings of exact and near deduplication."""

from __future__ import annotations

from dataclasses import dataclass

from codemill.config.loader import Section, invalid, setting


@dataclass
class ExactDedupConfig(Section):
    enabled: bool = True
    # Also treat documents equal up to whitespace runs (and leading/trailing space) as duplicates.
    normalize_whitespace: bool = False


@dataclass
class NearDedupConfig(Section):
    """MinHash LSH near-dedup of code (BigCode / The Stack parameters)."""

    enabled: bool = True
    ngram: int = setting(5, ge=1)
    num_perm: int = setting(256, ge=2, le=8192)
    threshold: float = setting(0.7, gt=0.0, le=1.0)
    lowercase: bool = False
    # Bands x rows are chosen so that a pair at the threshold becomes a candidate with at
    # least this probability, with the fewest candidates below it: every candidate is then
    # checked by exact Jaccard (with verify_min_cluster_size 2, the default), which removes
    # the false ones. 0: bands x rows minimise fp_weight * false positives + fn_weight *
    # false negatives instead (datasketch's choice, for unchecked candidates).
    candidate_probability: float = setting(0.99, ge=0.0, lt=1.0)
    fp_weight: float = setting(0.5, ge=0.0, le=1.0)
    fn_weight: float = setting(0.5, ge=0.0, le=1.0)
    # 0: chosen from the threshold as above; else used as given (bands * rows <= num_perm).
    bands: int = setting(0, ge=0)
    rows: int = setting(0, ge=0)
    # Clusters at least this large have their candidate pairs checked by real Jaccard (a
    # dropped document's kept partner is then certain to be a near-copy, not just a
    # candidate).
    verify_min_cluster_size: int = setting(2, ge=2)
    hash_seed: int = setting(1, ge=0)
    # LSH buckets up to this size yield all their pairs as candidates; a larger bucket
    # (mass copies or shared boilerplate) yields a star from its smallest id plus a chain
    # in id order, so candidate pairs grow linearly, not quadratically, with bucket size.
    all_pairs_max_bucket: int = setting(64, ge=2)

    def check(self) -> None:
        if (self.bands == 0) != (self.rows == 0):
            raise invalid("bands", "give both bands and rows, or neither (0: chosen from the "
                                   "threshold)")
        if self.bands * self.rows > self.num_perm:
            raise invalid("bands", f"bands x rows = {self.bands * self.rows} exceeds num_perm "
                                   f"= {self.num_perm}")
        if self.fp_weight + self.fn_weight == 0:
            raise invalid("fp_weight", "fp_weight and fn_weight cannot both be 0")
