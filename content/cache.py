"""Compiled templates, cached per process by (workspace, id, version).

Versions are immutable, so an entry never goes stale; the cache is bounded (LRU) so a workspace with
many templates costs at most `MAX_ENTRIES` compiled versions per process. Compiling happens at most once
per version per process (under a lock: the ingress compiles on the loop and on its CPU worker thread).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from content.compile import Compiled, compile_version
from schemas.templates import TemplateVersion

MAX_ENTRIES = 512


class CompiledCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, int], Compiled] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, record: TemplateVersion) -> Compiled:
        key = (record.workspace, record.id, record.version)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
            compiled = compile_version(record)
            self._entries[key] = compiled
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return compiled

    def __len__(self) -> int:
        return len(self._entries)


_process_cache = CompiledCache()


def compiled(record: TemplateVersion) -> Compiled:
    """The compiled form of a stored version, from this process's cache."""
    return _process_cache.get(record)
