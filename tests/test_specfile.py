"""Strict spec-file helpers: the closest-name hint that every 'unknown name' error carries."""

from __future__ import annotations

import pytest

from workloads.specfile import closest

GPUS = ["a100-sxm-80gb", "b200-sxm-180gb", "h100-sxm-80gb", "h200-sxm-141gb", "l40s", "rtx-4090", "rtx-a6000"]


@pytest.mark.parametrize("typed,meant", [("a100", "a100-sxm-80gb"), ("H100", "h100-sxm-80gb"),
                                         ("4090", "rtx-4090"), ("a6000", "rtx-a6000"),
                                         ("h100-sxm-80g", "h100-sxm-80gb"), ("rtx-4080", "rtx-4090")])
def test_closest_finds_what_was_meant(typed: str, meant: str) -> None:
    assert closest(typed, GPUS) == meant


def test_closest_is_none_when_nothing_is_close() -> None:
    assert closest("tpu-v5e", GPUS) is None
