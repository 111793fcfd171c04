"""A background pass over every collection, once after start-up (adopt.py, thumbnail_mover.py).

It begins once the database is migrated and never holds up SERVING; a database that goes away pauses it
briefly, a media store that refuses files (full, read-only) pauses it until an operator could act, and
a bug ends it with a logged traceback rather than taking the service down.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from index_service.config import Config
from index_service.domain import ServiceError, StorageError
from index_service.media import MediaStore
from index_service.repository import Repository
from semsearch_common.worker import Worker

log = logging.getLogger(__name__)

RETRY_S = 5.0  # after the database went away mid-pass
STORAGE_RETRY_S = 300.0  # after the media store refused a file (full, read-only): an operator must act first


class OnePass(Worker):
    """Runs `run()` until one pass completes (then `done` is set); subclasses say what in `task`."""

    task = "a pass over the collections"  # for the log: "<task> paused: ..."

    def __init__(self, name: str, config: Config, repo: Repository, media: MediaStore) -> None:
        super().__init__(name)
        self.config, self.repo, self.media = config, repo, media
        self.done = threading.Event()
        self._after: dict[str, int] = {}  # table -> last id walked, so a retried pass resumes

    def run(self) -> Any:
        """One pass over every collection."""
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.repo.ready:
                self._stop.wait(self.config.health_interval_s)
                continue
            try:
                self.run()
                if not self._stop.is_set():
                    self.done.set()
                return
            except StorageError as err:
                log.error("%s paused: %s", self.task, err)
                self._stop.wait(STORAGE_RETRY_S)
            except ServiceError as err:
                log.warning("%s paused: %s", self.task, err)
                self._stop.wait(RETRY_S)
            except Exception:  # a bug here must not take the service down with it
                log.exception("%s failed", self.task)
                return
