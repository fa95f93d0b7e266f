import time

import pytest
from ulid import ULID

from schemas.ids import derived_id, has_prefix, new_id, new_ids


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


def test_ids_made_in_bulk_are_ulids_of_now_distinct_and_uniform():
    before = int(time.time() * 1000)
    made = new_ids("sub", 20_000)
    after = int(time.time() * 1000)
    assert len(made) == len(set(made)) == 20_000
    for made_id in made[:100]:
        assert has_prefix(made_id, "sub") and len(made_id) == 30
        assert str(ULID.from_str(made_id[4:])) == made_id[4:]
        assert before <= ULID.from_str(made_id[4:]).milliseconds <= after
    # every character of the random part is used, about equally (5 random bits per character)
    counts = {c: 0 for c in "0123456789ABCDEFGHJKMNPQRSTVWXYZ"}
    for made_id in made:
        for c in made_id[14:]:
            counts[c] += 1
    assert min(counts.values()) > 0.9 * 20_000 * 16 / 32
    assert new_ids("evt", 0) == []


def test_unknown_prefixes_are_refused():
    with pytest.raises(ValueError):
        new_id("zzz")
    with pytest.raises(ValueError):
        new_ids("zzz", 3)


def test_derived_ids_are_deterministic():
    assert derived_id("msg", 1_700_000_000_000, "ws", "key") == derived_id(
        "msg", 1_700_000_000_000, "ws", "key"
    )
    assert derived_id("msg", 1_700_000_000_000, "ws", "key") != derived_id(
        "msg", 1_700_000_000_000, "ws", "other"
    )


def test_derived_ids_are_the_ulid_text_of_their_time_and_digest():
    """The hand encoding writes what the ULID library writes for the same 16 bytes (issue #14)."""
    import hashlib

    from ulid import ULID

    for millis, parts in [(0, ("a",)), (1_700_000_000_000, ("ws", "key", "k-1")), (2**48 - 1, ("x", "y"))]:
        digest = hashlib.sha256("\x1f".join(parts).encode()).digest()[:10]
        expected = f"run_{ULID.from_bytes(millis.to_bytes(6, 'big') + digest)}"
        assert derived_id("run", millis, *parts) == expected
    with pytest.raises(OverflowError):
        derived_id("run", 2**48, "too", "late")


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
