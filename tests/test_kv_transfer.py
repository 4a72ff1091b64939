"""KV-cache transfer between model instances over the fabric: message layout, closed form, and the
flow-level simulation agreeing with it when nothing contends (and not when transfers share a NIC)."""

from __future__ import annotations

import pytest

from hwmodels.network.collectives import CollectiveOp, collective_time
from hwmodels.network.topology import load_cluster
from hwmodels.network.transfer import kv_transfer_messages, kv_transfer_schedules, kv_transfer_time
from sim.fabric import simulate_collectives
from workloads.errors import ConfigError

GIB = 1 << 30


def test_messages_line_up_head_shards() -> None:
    """TP4 -> TP2: each destination GPU holds the heads of two source GPUs (4 messages of 1/4)."""
    msgs = kv_transfer_messages(["a0", "a1", "a2", "a3"], ["b0", "b1"], 8.0)
    assert msgs == [("a0", "b0", 2.0), ("a1", "b0", 2.0), ("a2", "b1", 2.0), ("a3", "b1", 2.0)]
    assert kv_transfer_messages(["a0"], ["b0", "b1"], 8.0) == [("a0", "b0", 4.0), ("a0", "b1", 4.0)]
    with pytest.raises(ConfigError, match="share GPUs"):
        kv_transfer_messages(["a0"], ["a0"], 1.0)


def test_tp8_node_to_node_is_eight_rails_in_parallel() -> None:
    """DGX A100 node 0 (TP8) to node 1 (TP8): GPU i sends 1/8 over its own rail's HDR NIC, so the transfer
    takes one send/recv of nbytes / 8; the flow-level run of the 8 concurrent messages agrees (rails do
    not share links)."""
    cl = load_cluster("dgx-a100-superpod", gpus=16)
    src, dst = list(cl.gpus[:8]), list(cl.gpus[8:])
    t = kv_transfer_time(cl, src, dst, GIB)
    one = collective_time(cl, CollectiveOp.SEND_RECV, GIB / 8, gpus=[src[0], dst[0]]).time_s
    assert t == pytest.approx(one)
    flows = simulate_collectives(cl, kv_transfer_schedules(cl, src, dst, GIB))
    assert flows.time_s == pytest.approx(t, rel=1e-6)


def test_one_gpu_fanning_out_shares_its_nic() -> None:
    """TP1 prefill -> TP2 decode on another node: the source sends two halves through its one NIC at
    once; flow level the two share it and finish together, no sooner than the whole KV over one rail
    (the closed form's back-to-back messages), within the per-message latency."""
    cl = load_cluster("dgx-a100-superpod", gpus=16)
    src, dst = [cl.gpus[0]], [cl.gpus[8], cl.gpus[9]]
    closed = kv_transfer_time(cl, src, dst, GIB)
    flows = simulate_collectives(cl, kv_transfer_schedules(cl, src, dst, GIB)).time_s
    assert flows == pytest.approx(closed, rel=0.02)
    assert closed > 1.9 * kv_transfer_time(cl, [cl.gpus[0], cl.gpus[1]], dst, GIB)
