"""Random splits of an outcome table, stratified by task: folds for cross-fitting, resplits for
the guarantee check.

Stratifying keeps every fold's (and every resplit's) task mix equal to the table's, so a
fold is not by chance poorer in the hard tasks; without a task column the queries form
one stratum.
"""

from __future__ import annotations

import numpy as np

from entrorouter.data.table import OutcomeTable


def stratified_folds(table: OutcomeTable, n_folds: int, seed: int) -> np.ndarray:
    """(n,) fold index in [0, n_folds) per query, each task spread evenly over the folds."""
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    rng = np.random.default_rng(seed)
    folds = np.empty(table.n_queries, dtype=np.int64)
    offset = 0
    for rows in _strata(table):
        # Continue the round-robin where the previous task stopped, so small tasks do not
        # all start in fold 0 and the folds stay within one query of each other in size.
        folds[rng.permutation(rows)] = (np.arange(len(rows)) + offset) % n_folds
        offset += len(rows)
    return folds


def stratified_resplit(table: OutcomeTable, test_fraction: float, seed: int) -> np.ndarray:
    """(n,) True for the test queries of a random split with ``test_fraction`` of each task."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = np.zeros(table.n_queries, dtype=bool)
    for rows in _strata(table):
        test[rng.permutation(rows)[: round(test_fraction * len(rows))]] = True
    return test


def _strata(table: OutcomeTable) -> list[np.ndarray]:
    if table.tasks is None:
        return [np.arange(table.n_queries)]
    tasks = np.asarray(table.tasks, dtype=str)
    return [np.flatnonzero(tasks == task) for task in np.unique(tasks)]
