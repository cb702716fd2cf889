"""The one compare-and-swap loop every registry writer uses (state.json, observations, creation)."""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from .base import RegistryError, VersionedStore

T = TypeVar("T")
CAS_ATTEMPTS = 60


def cas(store: VersionedStore, key: str, modify: Callable[[bytes | None], tuple[bytes | None, T]],
        attempts: int = CAS_ATTEMPTS) -> T:
    """Read ``key``, let ``modify`` compute its new content from the current one (None: absent), swap.

    ``modify`` returns ``(data, result)``: ``data`` None means nothing needs writing. Otherwise the
    data replaces exactly the version that was read (or creates the key when it was absent); if
    another writer got there first, the loop reads again and asks ``modify`` again. Returns the
    result of the ``modify`` call whose data was written (or that wrote nothing). ``modify`` may
    raise to give up; nothing has been written then.
    """
    for attempt in range(attempts):
        got = store.get(key)
        data, result = modify(got[0] if got else None)
        if data is None:
            return result
        if store.put(key, data, got[1]) if got else store.create_if_absent(key, data):
            return result
        # Lost the race: wait a little (more each time, jittered so that writers spread out).
        time.sleep(min(0.5, 0.005 * 2 ** min(attempt, 7)) * random.uniform(0.5, 1.5))
    raise RegistryError(f"{key}: still changing after {attempts} attempts; try again")
