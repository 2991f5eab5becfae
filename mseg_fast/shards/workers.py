"""A small process pool for shard writing: one task queue, one event queue, no manager.

Why not ProcessPoolExecutor plus a Manager queue for progress: the manager is one more
process and every progress update a round trip to it, which on a 2-core machine cost a
measurable share of the second worker (tools/bench_shard.py). Here workers put progress,
results and errors on one plain queue that the parent reads; the parent also notices a
worker that died without reporting (killed, out of memory).
"""

from __future__ import annotations

import functools
import multiprocessing
import queue
import time
import traceback
from typing import Any, Callable, Sequence

from mseg_fast.errors import UserError
from mseg_fast.lifeline import Owner, exit_with, owner


def _report_progress(events, count: int) -> None:
    events.put(("progress", count))


def _worker(function: Callable, args: tuple, tasks, events, parent: Owner) -> None:
    # A parent killed with -9 cannot stop us: leave at once (lifeline.py), or we would race its rerun for
    # the files; what we were writing has a temporary name that the rerun removes.
    exit_with(parent)
    events.put(("ready", time.monotonic()))  # CLOCK_MONOTONIC is system-wide on Linux
    while (task := tasks.get()) is not None:
        try:
            result = function(task, *args, progress=functools.partial(_report_progress, events))
        except BaseException as error:  # noqa: BLE001 - reported to the parent, which decides
            if not isinstance(error, UserError):
                error = RuntimeError(f"shard worker failed:\n{traceback.format_exc()}")
            events.put(("error", error))
            return
        events.put(("done", result))


def run_pool(function: Callable, args: tuple, tasks: Sequence[Any], workers: int,
             on_progress: Callable[[int], None]) -> tuple[list[Any], float]:
    """Run `function(task, *args, progress=...)` for every task in `workers` processes.

    Returns:
        The results (in completion order) and the seconds until the first worker was ready.

    Raises:
        The first error a worker reports (other workers are stopped), or RuntimeError when a
        worker dies without reporting.
    """
    context = multiprocessing.get_context("forkserver")  # no fork of a threaded parent
    task_queue, events = context.Queue(), context.Queue()
    for task in tasks:
        task_queue.put(task)
    processes = [context.Process(target=_worker, args=(function, args, task_queue, events, owner()), daemon=True)
                 for _ in range(workers)]
    started = time.monotonic()
    first_ready = None
    for process in processes:
        process.start()
        task_queue.put(None)
    results: list[Any] = []
    try:
        while len(results) < len(tasks):
            try:
                kind, payload = events.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if dead or all(p.exitcode is not None for p in processes):
                    raise RuntimeError(f"a shard worker died (exit codes {dead}); rerun to resume") from None
                continue
            if kind == "ready":
                first_ready = payload if first_ready is None else min(first_ready, payload)
            elif kind == "progress":
                on_progress(payload)
            elif kind == "done":
                results.append(payload)
            else:
                raise payload
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    return results, (first_ready or started) - started
