"""The public surface is exactly streampage.__all__: sorted, importable, nothing private."""

import streampage


def test_all_is_sorted_and_every_name_exists() -> None:
    assert streampage.__all__ == sorted(streampage.__all__)
    for name in streampage.__all__:
        assert hasattr(streampage, name), name


def test_no_private_name_is_exported() -> None:
    assert not [name for name in streampage.__all__ if name.startswith("_")]


def test_exported_objects_are_documented() -> None:
    undocumented = [
        name for name in streampage.__all__ if not (getattr(streampage, name).__doc__ or "").strip()
    ]
    assert undocumented == []
