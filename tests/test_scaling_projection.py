"""The roofline arithmetic of experiments/scaling_projection.py, on hand-made measurements (the
compile-and-measure part is what tests/test_scaling.py proves at test size)."""

from __future__ import annotations

import os
import sys

import pytest

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
sys.path.insert(0, EXPERIMENTS)

import scaling_projection as sp  # noqa: E402


def test_ring_collectives_cost_what_the_textbook_says():
    collectives = {"all-reduce": {"count": 2, "bytes": 800}, "all-gather": {"count": 1, "bytes": 400}}
    # all-reduce: 2 (n-1)/n x bytes; all-gather: (n-1)/n x bytes; at 100 bytes/s over 4 devices
    assert sp.communication_seconds(collectives, 4, 100.0) == pytest.approx(2 * 0.75 * 8 + 0.75 * 4)
    assert sp.communication_seconds(collectives, 1, 100.0) == 0.0


def test_projection_overlap_brackets_and_recipe_hours():
    row = {"devices": 8, "layout": "data", "batch": 40, "length": 512, "hlo_flops": 1e12, "model_flops": 8e12 * 0.9,
           "collectives": {"all-reduce": {"count": 1, "bytes": 1e9}},
           "memory": {"argument": 1e9, "output": 1e9, "alias": 1e9, "temp": 2e9}}
    system = {"devices": 8, "peak": 1e15, "link": 1e11, "hbm": 80e9}
    p = sp.project(row, system)
    assert p["compute_s"] == pytest.approx(1e12 / (1e15 * sp.EFFICIENCY))
    assert p["comm_s"] == pytest.approx(2 * 7 / 8 * 1e9 / 1e11)
    serial, overlapped = p["no overlap"], p["overlap"]
    assert serial["step_s"] == pytest.approx(p["compute_s"] + p["comm_s"])
    assert overlapped["step_s"] == pytest.approx(max(p["compute_s"], p["comm_s"]))
    assert serial["tokens_per_s"] == pytest.approx(40 * 512 / serial["step_s"])
    assert serial["recipe_hours"] == pytest.approx(sp.RECIPE_TOKENS / serial["tokens_per_s"] / 3600)
    assert serial["mfu"] == pytest.approx(8e12 * 0.9 / 8 / serial["step_s"] / 1e15)
    assert p["footprint_gb"] == pytest.approx(3.0) and p["fits"]
    table = sp.projection_table([{**row, "devices": s["devices"]} for s in sp.SYSTEMS.values()])
    assert all(name in table for name in sp.SYSTEMS) and "90 hours" in table
