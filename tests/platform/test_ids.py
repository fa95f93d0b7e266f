import time

import pytest
from ulid import ULID

from schemas.ids import derived_id, has_prefix, new_id


def test_new_ids_are_ulids_of_now_and_sort_by_time():
    before = int(time.time() * 1000)
    first = new_id("msg")
    time.sleep(0.002)
    second = new_id("msg")
    after = int(time.time() * 1000)
    assert has_prefix(first, "msg") and len(first) == 30
    parsed = ULID.from_str(first[4:])
    assert str(parsed) == first[4:] and before <= parsed.milliseconds <= after
    assert first < second
    assert len({new_id("evt") for _ in range(10_000)}) == 10_000


def test_unknown_prefixes_are_refused():
    with pytest.raises(ValueError):
        new_id("zzz")


def test_derived_ids_are_deterministic():
    assert derived_id("msg", 1_700_000_000_000, "ws", "key") == derived_id(
        "msg", 1_700_000_000_000, "ws", "key"
    )
    assert derived_id("msg", 1_700_000_000_000, "ws", "key") != derived_id(
        "msg", 1_700_000_000_000, "ws", "other"
    )


def test_a_forked_child_does_not_repeat_its_parents_ids():
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.write(write, "".join(new_id("msg")[-16:] for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1000).decode()
    os.close(read)
    parent = "".join(new_id("msg")[-16:] for _ in range(5))
    assert child and child != parent
