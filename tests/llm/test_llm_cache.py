"""The disk cache: stable keys, atomic writes, unreadable entries ignored."""
import os

import pytest

from llm.cache import DiskCache, cache_key, request_identity

MSG = [{"role": "user", "content": "hi"}]


def test_key_is_canonical_and_covers_every_sampling_setting():
    base = request_identity("m", MSG, 1, 64)
    assert cache_key(base, 0) == cache_key(request_identity("m", [{"content": "hi", "role": "user"}], 1.0, 64), 0)
    others = [cache_key(base, 1), cache_key(request_identity("m2", MSG, 1, 64), 0),
              cache_key(request_identity("m", MSG, 0.5, 64), 0), cache_key(request_identity("m", MSG, 1, 65), 0),
              cache_key(request_identity("m", MSG, 1, 64, top_p=0.9), 0),
              cache_key(request_identity("m", MSG, 1, 64, seed=3), 0),
              cache_key(request_identity("m", MSG + [{"role": "user", "content": "x"}], 1, 64), 0)]
    assert len({cache_key(base, 0), *others}) == 1 + len(others)
    assert len(cache_key(base, 0)) == 64


def test_put_get_and_no_temporary_files_left(tmp_path):
    cache = DiskCache(tmp_path)
    key = cache_key(request_identity("m", MSG, 0, 8), 0)
    assert cache.get(key) is None
    cache.put(key, {"text": "hello"})
    assert cache.get(key)["text"] == "hello"
    files = [f for _, _, fs in os.walk(tmp_path) for f in fs]
    assert files == [key + ".json"]


def test_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    cache = DiskCache(tmp_path)
    key = cache_key(request_identity("m", MSG, 0, 8), 0)

    def crash(*args):
        raise KeyboardInterrupt  # the run is killed between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put(key, {"text": "hello"})
    monkeypatch.undo()
    assert cache.get(key) is None and cache.corrupt == 0
    assert [f for _, _, fs in os.walk(tmp_path) for f in fs] == []


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"[1, 2]", b'{"key": "other", "text": "x"}',
                                     b'{"text": 3}'])
def test_unreadable_entries_count_as_missing(tmp_path, content):
    cache = DiskCache(tmp_path)
    key = cache_key(request_identity("m", MSG, 0, 8), 0)
    os.makedirs(os.path.dirname(cache.path(key)))
    with open(cache.path(key), "wb") as f:
        f.write(content)
    assert cache.get(key) is None and cache.corrupt == 1
    cache.put(key, {"text": "fixed"})
    assert cache.get(key)["text"] == "fixed"
