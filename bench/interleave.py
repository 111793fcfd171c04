"""Ratios that survive a shared machine: engines measured in alternating short windows, round after round.

Measuring engine A for a minute and then engine B for a minute compares two different minutes of other
people's load. Here every round visits every engine at every client count (alternating the order), and a
ratio is taken per round, between windows seconds apart: the median of those is the figure to quote and
their min..max says how noisy the machine was.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

Call = Callable[[int], object]  # call(i): one request for item i, blocking until answered
Samples = dict[str, dict[str, list[float]]]  # engine -> clients -> one rate per round


def threads_rate(clients: int, min_s: float, call: Call) -> float:
    """Calls/s of `clients` threads calling call(i) in a loop until min_s has passed (at least 2 calls each)."""
    gate = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(c: int) -> int:
        gate.wait()
        done = 0
        while done < 2 or time.perf_counter() < deadline[0]:
            call(c * 7919 + done)
            done += 1
        return done

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, c) for c in range(clients)]
        started = time.perf_counter()
        deadline[0] = started + max(min_s, 0.5)
        gate.wait()
        done = sum(f.result() for f in futures)
        return done / (time.perf_counter() - started)


def latencies(call: Call, min_s: float, at_least: int = 20) -> list[float]:
    """Seconds of each call(i), one at a time (one client), for min_s or at_least calls."""
    samples: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < min_s or len(samples) < at_least:
        t = time.perf_counter()
        call(len(samples))
        samples.append(time.perf_counter() - t)
    return samples


def interleaved(callers: dict[str, Call], clients: Sequence[int], rounds: int, min_s: float,
                progress: bool = True) -> Samples:
    """Images/s per engine and client count; every round visits every engine at every count."""
    for call in callers.values():  # warm: first-call allocations and lazy loads out of the windows
        for i in range(3):
            call(i)
    samples: Samples = {e: {str(c): [] for c in clients} for e in callers}
    for r in range(rounds):
        for count in clients:
            order = list(callers) if r % 2 == 0 else list(reversed(callers))
            for engine in order:
                samples[engine][str(count)].append(threads_rate(count, min_s, callers[engine]))
        if progress:
            print(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{e} {samples[e][str(clients[0])][-1]:.1f}" for e in callers) + f" img/s at {clients[0]} client(s)",
                flush=True)
    return samples


def ratios(samples: Samples, engine: str, other: str) -> dict[str, dict[str, float]]:
    """engine/other per client count: the median of per-round ratios, and their min and max (the noise)."""
    out = {}
    for clients, mine in samples[engine].items():
        per_round = [a / b for a, b in zip(mine, samples[other][clients], strict=True)]
        out[clients] = {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round)}
    return out


def describe(name: str, by_clients: dict[str, dict[str, float]]) -> str:
    """One line: 'name: 1 clients 2.10x (1.90-2.30); ...'."""
    return f"{name}: " + "; ".join(f"{c} clients {r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"
                                   for c, r in by_clients.items())
