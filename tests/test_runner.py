"""streampage.run picks uvloop when it is installed, asyncio's loop when asked."""

import asyncio

import pytest

import streampage


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_run_uses_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert streampage.run(_loop_module()).startswith("uvloop")


def test_run_can_be_told_to_use_asyncio() -> None:
    assert streampage.run(_loop_module(), use_uvloop=False).startswith("asyncio")
