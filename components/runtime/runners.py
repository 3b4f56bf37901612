"""Where the work runs: local processes (the default) or a Dask cluster, from ``orchestration``.

``featurize`` maps its chunks over a Dask ``Client`` (:func:`chunk_map`); ``train`` runs its
Prefect tasks on a ``DaskTaskRunner`` (:func:`task_runner`). With ``dask_address: null`` a
``LocalCluster`` of ``dask_workers`` single-threaded processes is started and torn down per
run; with an address, an existing scheduler is used and its workers need this project
installed (they import ``components``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from components.errors import SerError
from components.features import sets
from components.features.featurize import MapFn, ordered_map
from components.settings import Orchestration


def n_workers(orchestration: Orchestration, train_workers: int) -> int:
    """Tasks at once: ``train_workers`` processes (``train.n_workers``), or ``dask_workers`` on Dask."""
    return orchestration.dask_workers if orchestration.task_runner == "dask" else train_workers


def local_cluster_kwargs(n_workers: int) -> dict[str, Any]:
    """A LocalCluster of single-threaded worker processes: the extractors and models are CPU-bound."""
    return {"n_workers": n_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}


@contextlib.contextmanager
def dask_client(address: str | None, n_workers: int) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``address``, or of a LocalCluster for the block."""
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if address:
            try:
                client = stack.enter_context(Client(address, timeout="30s"))
            except OSError as err:
                raise SerError(
                    f"orchestration.dask_address: no Dask scheduler answers at {address} ({err}); "
                    "start one (dask scheduler) or set dask_address: null for a local cluster"
                ) from err
        else:
            cluster = stack.enter_context(LocalCluster(**local_cluster_kwargs(n_workers)))
            client = stack.enter_context(Client(cluster))
        yield client


@contextlib.contextmanager
def chunk_map(
    orchestration: Orchestration, feature_sets: Iterable[str], params: Mapping[str, Any]
) -> Iterator[MapFn | None]:
    """The ``map_fn`` that featurize's chunks run through: None (its own process pool) or Dask.

    On Dask, every worker builds its filterbanks and openSMILE object first (as the pool's
    initialiser does), and at most two chunks per worker are in flight, so memory stays flat.
    """
    if orchestration.task_runner == "process":
        yield None
        return
    names = sets.check_sets(feature_sets)
    with dask_client(orchestration.dask_address, orchestration.dask_workers) as client:
        client.run(sets.warm_up, names, dict(params))
        ahead = 2 * max(1, len(client.scheduler_info()["workers"]))
        # pure=False: two chunks with equal contents are still two tasks, each freed when consumed
        yield lambda fn, items: ordered_map(_Impure(client), fn, items, ahead=ahead)


class _Impure:
    """A Dask client whose ``submit`` never merges equal calls into one task (as an Executor's)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def submit(self, fn: Any, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)
