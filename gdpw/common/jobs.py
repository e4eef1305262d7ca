"""One seam for scale: a job is its items, a function that does one item and writes its output
atomically, and a set-up done once per worker (a FLAME model, a tracker, a network).

Where the items run is the runner's choice and never changes what they do: this process, a
local process pool (``engine="local"``, ``workers``) or a Ray cluster (``engine="ray"``, one
actor per worker, so the set-up is loaded once per worker, not per item). ``--shard J/N`` first
keeps a deterministic slice of the items (by a hash of each item's key, a relative path: the
same on every machine and in every listing order), so a SLURM array, or any scheduler, runs the
same job. An item whose output exists is skipped, so a rerun after a crash, a killed worker or a
preempted array task completes the rest; an item that fails for its own reasons (``bad_item``) is
recorded with its one-line error and the run goes on; any other error stops the run.

    job = Job("preprocess", videos, key=..., setup=partial(load, cfg), run=process, done=exists,
              bad_item=(VideoError,))
    for outcome in run_job(job, Runner(engine="ray", workers=8)):
        ...
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from gdpw.common.config import validate
from gdpw.common.errors import MissingAssetError, UsageError
from gdpw.common.native_logs import verbose

S = TypeVar("S")  # what a worker sets up once
I = TypeVar("I")  # an item  # noqa: E741
R = TypeVar("R")  # an item's result


@dataclass(frozen=True)
class Shard:
    """The ``index``-th of ``count`` deterministic slices of a job's items."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise UsageError(f"--shard J/N needs 0 <= J < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'3/100' -> the fourth of 100 slices (J counts from 0, as SLURM_ARRAY_TASK_ID does)."""
        index, sep, count = text.partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(int(index), int(count))
        except ValueError:
            raise UsageError(f"--shard takes J/N (e.g. 0/100), got {text!r}") from None

    def holds(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"


@dataclass(frozen=True)
class Runner:
    """Where a job's items run."""

    engine: Literal["local", "ray"] = "local"  # local: this process or a process pool; ray: a Ray cluster
    workers: int = 1  # processes (local) or actors (ray) working at once
    address: str | None = None  # ray: 'auto' or HOST:PORT of a running cluster (none: start one on this machine)
    shard: str | None = None  # J/N: only the J-th of N deterministic slices of the items
    cpus_per_worker: float = 1.0  # ray: CPUs each worker holds
    gpus_per_worker: float = 0.0  # ray: GPUs (or a fraction of one) each worker holds
    threads: int | None = None  # PyTorch threads per worker; default: this machine's cores shared out (ray: the worker's CPUs)

    def __post_init__(self) -> None:
        validate(self)
        if self.workers < 1 or (self.threads is not None and self.threads < 1):
            raise UsageError(f"--workers and --threads must be at least 1, got {self.workers} and {self.threads}")
        if self.shard is not None:
            Shard.parse(self.shard)
        if self.address is not None and self.engine != "ray":
            raise UsageError("--address names a Ray cluster: use it with --engine ray")


@dataclass(frozen=True)
class Job(Generic[S, I, R]):
    """Items, what to do with one, and what a worker loads once. ``setup`` and ``run`` must be
    picklable (module-level functions or ``functools.partial`` of them) for process pools and Ray."""

    name: str
    items: Sequence[I]
    key: Callable[[I], str]  # stable across machines: a relative path, say
    setup: Callable[[], S]
    run: Callable[[S, I], R]  # does one item and writes its output atomically
    done: Callable[[I], bool]  # its output is already written
    bad_item: tuple[type[BaseException], ...] = ()  # errors that are the item's fault: recorded, the run goes on
    close: Callable[[S], None] | None = None  # frees what ``setup`` made, when the worker is done

    @property
    def task(self) -> Task[S, I, R]:
        return Task(self.setup, self.run, self.bad_item, self.close)


@dataclass(frozen=True)
class Outcome(Generic[I, R]):
    item: I
    result: R | None = None
    error: str | None = None  # the item's one-line error
    skipped: bool = False  # done by an earlier run

    @property
    def ok(self) -> bool:
        return self.error is None


def select(job: Job[S, I, R], shard: str | None) -> list[I]:
    """The job's items in ``shard`` (all without one)."""
    if shard is None:
        return list(job.items)
    part = Shard.parse(shard)
    return [item for item in job.items if part.holds(job.key(item))]


def run_job(job: Job[S, I, R], runner: Runner, progress: bool = True) -> list[Outcome[I, R]]:
    """Run the job's items of ``runner.shard`` that are not done; every item's outcome, skipped ones first."""
    from tqdm import tqdm

    mine = select(job, runner.shard)
    done = [job.done(item) for item in mine]  # each output looked up once
    outcomes: list[Outcome[I, R]] = [Outcome(item, skipped=True) for item, d in zip(mine, done) if d]
    todo = [item for item, d in zip(mine, done) if not d]
    engine = _ray if runner.engine == "ray" else _local
    with tqdm(total=len(todo), desc=job.name, unit="item", disable=not progress or not todo) as bar:
        for outcome in engine(job, todo, runner):
            outcomes.append(outcome)
            bar.update()
    return outcomes


@dataclass(frozen=True)
class Task(Generic[S, I, R]):
    """What a worker needs of a job (not its items): sent to each worker once."""

    setup: Callable[[], S]
    run: Callable[[S, I], R]
    bad_item: tuple[type[BaseException], ...]
    close: Callable[[S], None] | None = None

    def attempt(self, state: S, item: I) -> Outcome[I, R]:
        """One item; its own failure (``bad_item``) becomes its outcome, anything else is raised."""
        try:
            return Outcome(item, self.run(state, item))
        except self.bad_item as err:
            return Outcome(item, error=" ".join(str(err).split()) or type(err).__name__)


def _local(job: Job[S, I, R], todo: list[I], runner: Runner) -> Iterator[Outcome[I, R]]:
    if not todo:
        return
    task = job.task
    if runner.workers == 1:
        state = task.setup()
        try:
            for item in todo:
                yield task.attempt(state, item)
        finally:
            if task.close is not None:
                task.close(state)
        return
    # spawned, not forked: a fork copies the locks of this process's threads (MediaPipe's, PyTorch's) as they are
    spawn = multiprocessing.get_context("spawn")
    workers = min(runner.workers, len(todo))
    threads = runner.threads or max(1, (os.cpu_count() or 1) // workers)  # not every worker on every core
    with ProcessPoolExecutor(workers, spawn, initializer=_set_up_worker, initargs=(task, threads)) as pool:
        futures = [pool.submit(_attempt_in_worker, item) for item in todo]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


class _PoolWorker:
    """What a pool process set up once (a pool's initializer can only leave it in the process)."""

    task: Task[Any, Any, Any] | None = None
    state: Any = None


def _set_up_worker(task: Task[Any, Any, Any], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _PoolWorker.task, _PoolWorker.state = task, task.setup()
    if task.close is not None:  # the pool's processes end normally: free the set-up before the interpreter goes
        atexit.register(task.close, _PoolWorker.state)


def _attempt_in_worker(item: Any) -> Outcome[Any, Any]:
    assert _PoolWorker.task is not None
    return _PoolWorker.task.attempt(_PoolWorker.state, item)


class _RayWorker:
    """A Ray actor: the job's set-up, loaded once, then items one at a time."""

    def __init__(self, task: Task[Any, Any, Any], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.task = task
        self.state = task.setup()

    def attempt(self, item: Any) -> Outcome[Any, Any]:
        return self.task.attempt(self.state, item)

    def __del__(self) -> None:  # also called on Ray's class wrapper in the driver, which has no task
        task = getattr(self, "task", None)
        if task is not None and task.close is not None:
            task.close(self.state)


def _ray(job: Job[S, I, R], todo: list[I], runner: Runner) -> Iterator[Outcome[I, R]]:
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise MissingAssetError('--engine ray needs Ray: pip install "gdpw[ray]"') from None
    if not todo:
        return
    started = not ray.is_initialized()
    if started:  # without an address: a Ray of its own on this machine, stopped at the end
        ray.init(address=runner.address, log_to_driver=False, include_dashboard=False,
                 logging_level=logging.DEBUG if verbose() else logging.ERROR,
                 **({} if runner.address else {"num_cpus": max(1, int(runner.workers * runner.cpus_per_worker))}))
    try:
        # spread over the nodes; a worker lost with its node is started again elsewhere and its item retried
        worker = ray.remote(num_cpus=runner.cpus_per_worker, num_gpus=runner.gpus_per_worker, max_restarts=-1,
                            max_task_retries=-1, scheduling_strategy="SPREAD")(_RayWorker)
        task = job.task
        threads = runner.threads or max(1, int(runner.cpus_per_worker))
        pool = ActorPool([worker.remote(task, threads) for _ in range(min(runner.workers, len(todo)))])
        yield from pool.map_unordered(lambda actor, item: actor.attempt.remote(item), todo)
    finally:
        if started:
            ray.shutdown()
