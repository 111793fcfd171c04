"""Maintenance off the health thread: the media store's orphan sweep in bounded steps, deferred index builds,
rows handed to their graph (index_service.merger) and folds of the tag counts (index_service.tag_counts).

The sweep used to run inside the health check: due at start-up, it held SERVING back 17.3 s at 300,000
rows (about 10 minutes projected at 10 million), and health checks paused while it ran (issue 14).
Here it walks the store a few hundred files at a time, pausing between steps, on a thread of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from index_service import tag_counts
from index_service.domain import NotFound, ServiceError
from semsearch_common.worker import Worker

if TYPE_CHECKING:
    from index_service.config import Config
    from index_service.media import MediaStore
    from index_service.repository import Repository

log = logging.getLogger(__name__)

MIN_SWEEP_INTERVAL_S = 60.0


class Background(Worker):
    """One daemon thread: builds the indexes bulk loads deferred, and sweeps the media store step by step
    (stopping lets an index build in progress run to its end)."""

    def __init__(self, config: Config, repo: Repository, media: MediaStore) -> None:
        super().__init__("index-background")
        self.config, self.repo, self.media = config, repo, media
        self._sweep: Iterator[int] | None = None
        self._sweep_removed = 0
        self._next_sweep = 0.0  # monotonic: the first pass starts once the database is ready
        self.sweeps_done = 0
        self._next_fold = 0.0  # monotonic: when the tag counts are next looked at

    @property
    def sweeping(self) -> bool:
        """Whether a sweep pass is under way."""
        return self._sweep is not None

    def _loop(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                if self.repo.ready:
                    self._build_due()
                    self._fold_tag_counts()
                    merged = self.repo.merge_unindexed(self.config.merge_batch, self.config.merge_idle_s)
                    busy = self._sweep_step() or merged > 0
            except ServiceError as err:  # the database went away: the monitor reports it, we wait
                log.debug("background work paused: %s", err)
                self._sweep = None
            except Exception:  # a bug must not end maintenance for good
                log.exception("background maintenance failed")
                self._sweep = None
            self._stop.wait(self.config.sweep_pause_s if busy else min(1.0, self.config.health_interval_s))

    def _build_due(self) -> None:
        for name in self.repo.bulk.due():
            log.info("building the deferred index of collection %s", name)
            try:
                # Concurrently: upserts that arrive meanwhile are not blocked for the build's minutes.
                self.repo.build_index(concurrently=True, timeout_s=None, collection=name)
            except NotFound:  # dropped meanwhile
                self.repo.bulk.built(name)

    def _fold_tag_counts(self) -> None:
        """Fold the tag counts that writes have grown (tag_counts: reads stay small without a reader)."""
        if time.monotonic() >= self._next_fold:
            self._next_fold = time.monotonic() + tag_counts.FOLD_INTERVAL_S
            try:
                tag_counts.fold_grown(self.repo.pool)
            except ServiceError as err:  # the database went away: the next interval tries again
                log.debug("tag counts not folded: %s", err)
            except Exception:  # a bug here must not restart the media sweep's pass
                log.exception("folding the tag counts failed")

    def _sweep_step(self) -> bool:
        """One bounded step of the current pass, starting a pass when one is due; True while one runs."""
        if self._sweep is None:
            if time.monotonic() < self._next_sweep:
                return False
            interval = max(MIN_SWEEP_INTERVAL_S, self.config.orphan_grace_s)
            self._next_sweep = time.monotonic() + interval
            self._sweep = self.media.sweep_steps(self.repo.with_orphans, self.config.orphan_grace_s,
                                                 self.config.sweep_batch)
            self._sweep_removed = 0
        try:
            self._sweep_removed += next(self._sweep)
            return True
        except OSError as err:  # a media store that cannot be cleaned is an upload problem, not an outage
            log.error("orphan sweep of the media store failed: %s", err)
        except StopIteration:
            if self._sweep_removed:
                log.info("media sweep removed %d orphan file(s)", self._sweep_removed)
            self.sweeps_done += 1
        self._sweep = None
        return False
