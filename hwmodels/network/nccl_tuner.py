"""What NCCL's own tuner would pick: (algorithm, protocol) for a collective, from its cost model.

NCCL does not run the truly fastest algorithm; it runs the one its tuner *predicts* fastest
(``src/graph/tuning.cc``: ``ncclTopoTuneModel`` fills a latency and a bandwidth per function,
algorithm and protocol; ``ncclTopoGetAlgoTime`` adds a size-dependent tree correction and picks the
minimum of ``latency + bytes / bandwidth``). Its tables are coarse, so at some sizes it switches to an
algorithm that is slower on the real hardware, and measured times jump at powers of two: Vidur's
A100 file switches ring <-> tree exactly at 4, 8, 16 and 64 MiB, where ``treeCorrectionFactor``
changes (``log2(bytes / 64)`` crosses an integer).

xpusim therefore separates the *choice* from the *cost*: this module re-derives NCCL's choice (written
here from the published formula; constants below are NCCL 2.18's, the version PyTorch 2.1 ships, the
era of Vidur's profiles), and :mod:`hwmodels.network.collectives` prices the chosen pair with its own
model of the hardware.

The tuner's inputs are NCCL's *view* of the topology (not the achieved rates):
- intra-node: NCCL's NVLink bandwidth, 20 GB/s per NVLink3 link of 25 GB/s (topo.h ``SM80_NVLINK_BW``;
  20.6 for NVLink4), i.e. 0.8 x the spec's per-GPU NVLink rate, capped at 235 GB/s (Ampere) / 370 GB/s
  (Hopper) as tuning.cc caps it; PCIe: 24 GB/s per Gen4 x16 link (``PCI_BW`` x 2);
- network: the port speed each NIC reports (its line rate), times the NICs a node's GPUs use; a ring's
  channels cross the network at that speed; a balanced tree's channel only counts half of it per GPU
  (search.cc halves ``bwInter`` for ``BALANCED_TREE``), so its graph reaches twice the speed on a
  network-bound node (capped by the intra-node view);
- channels: the graph's bandwidth / 20 GB/s per channel (at least 2, at most 16: 12 on DGX A100, 16 on
  DGX H100), used only for the per-channel caps of LL, LL128 and tree. An approximation of search.cc:
  A100's first speed, 40 GB/s x 6 channels doubled by ``ncclTopoDupChannels``, gives the same 12;
  Hopper's, 60 GB/s x 6 doubled, gives 12 at 30 GB/s, not 16 (the LL128 ceiling on H100 is then
  0.75 x this one; docs/network.md says what that changes).

The per-architecture ceilings (:func:`bus_caps`) are also the cost model's
(:meth:`hwmodels.network.collectives.CollectiveCostModel.bus_cap`), so the tuner and the cost agree, architecture
by architecture, on how fast each protocol can go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# NCCL 2.18 src/graph/tuning.cc (µs). Index: [algorithm][protocol], protocols LL, LL128, Simple.
_BASE_LAT = {"tree": (4.4, 4.4, 0.0), "ring": (3.6, 10.0, 8.4)}
_HW_LAT = {  # per step: NVLink, PCI, NET
    "nvlink": {"tree": (0.52, 1.25, 28.0), "ring": (0.47, 1.9, 3.4)},
    "pci": {"tree": (1.0, 1.9, 28.0), "ring": (1.0, 2.5, 5.7)},
    "net": {"tree": (5.0, 8.5, 28.0), "ring": (2.7, 4.0, 9.6)},
}
_NVLS_LAT_US = 25.0            # hwLat NVLink NVLS Simple (2.19+; NVLS is Hopper-only and not validated here)
# Per-channel bandwidth caps (GB/s) by architecture index (0 Volta, 1 Ampere, 2 Hopper; Blackwell
# = 2 x Hopper, as tuning.cc's later Blackwell rows are) and node count index (1, 2, >2 nodes), from
# tuning.cc's perChMaxRingLL128Bws / perChMaxTreeLL128Bws / perChMaxTreeBws and llMaxBws (NVIDIA/nccl
# src/graph/tuning.cc). LL128 per channel: Volta/Ampere 20.0, Hopper 36.7 (its tree on >2 nodes 29.0).
# NCCL 2.5-2.8 had one all-reduce LL128 cap for every GPU (ll128MaxBwPerCh 16.7); that is not this table.
_RING_LL128_MAX_PER_CH = ((20.0, 20.0, 20.0), (20.0, 20.0, 20.0), (36.7, 36.7, 36.7))
_TREE_LL128_MAX_PER_CH = ((20.0, 20.0, 20.0), (20.0, 20.0, 20.0), (36.7, 36.7, 29.0))
_LL_MAX_BW = ((39.0, 39.0, 20.4), (87.7, 22.5, 19.0), (87.7, 22.5, 19.0))  # [arch or cpu][nodes 1, 2, >2]
_TREE_MAX_PER_CH = ((26.5, 18.5, 10.0), (24.0, 23.6, 17.8), (38.7, 41.4, 33.0))
_BUS_CAP = {1: 235.0, 2: 370.0}  # tuning.cc caps a graph's bus bandwidth (Ampere, Hopper)
# treeCorrectionFactor[protocol][log2(bytes / 64)], 64 B to 256 MiB
_TREE_CORRECTION = (
    (1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0, 1.0, 1.0, 1.0),
    (1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6, .6, .6, .6, .6, .8, .9, .9, .9, .9, 1.0, 1.0),
    (.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7, .8, .9, .9),
)
_PROTOS = ("ll", "ll128", "simple")
NVLINK_VIEW = 0.8      # NCCL's 20 GB/s per NVLink3 link of 25 GB/s (20.6 of 25 for NVLink4)
PCI_VIEW_BPS = 24e9    # NCCL's PCIe Gen4 x16
CHANNEL_BPS = 20e9     # one channel's speed, to count channels


def arch_index(gpu: str) -> tuple[int, float]:
    """(tuning.cc architecture index, blackwell scale) from a GPU catalog id."""
    g = gpu.lower()
    if g.startswith(("h100", "h200", "gh200")):
        return 2, 1.0
    if g.startswith(("b200", "b100", "gb200")):
        return 2, 2.0
    if g.startswith("v100"):
        return 0, 1.0
    return 1, 1.0


@dataclass(frozen=True)
class TunerView:
    """The topology as NCCL's tuner sees it (bytes/s are bus bandwidths of a graph)."""

    n: int
    nodes: int
    per_node: int
    intra: str                  # "nvlink" or "pci"
    ring_bw: float              # channels x speed of the ring graph
    tree_bw: float              # of the tree graph
    arch: int = 1
    arch_scale: float = 1.0
    amd_cpu: bool = True        # DGX A100 / H100 hosts are AMD EPYC (A100) or Intel (H100): LL's cap index
    ll128_net: bool = True      # LL128 across the network needs GPUDirect RDMA (NIC near the GPU)
    ll128_intra: bool = True    # LL128 inside a node needs NVLink
    nvls: bool = False


def _channels(bw: float) -> int:
    return max(2, min(16, math.ceil(bw / CHANNEL_BPS - 1e-9)))


def channels(view: TunerView, algo: str) -> int:
    """Channels of NCCL's graph for ``algo`` (ring or tree): its bus bandwidth / 20 GB/s, 2 to 16."""
    return _channels(_graph_bw(view, algo) * 1e9)


def _graph_bw(view: TunerView, algo: str) -> float:
    """GB/s: the graph's bus bandwidth (channels x speed), capped as tuning.cc caps it."""
    bw = (view.ring_bw if algo == "ring" else view.tree_bw) / 1e9
    cap = _BUS_CAP.get(view.arch)
    return bw if cap is None else min(bw, cap * view.arch_scale)


def bus_caps(view: TunerView, algo: str, proto: str) -> float | None:
    """Bytes/s: the ceiling tuning.cc puts on the bus bandwidth of (``algo``, ``proto``) for this
    architecture and channel count, beyond the graph's speed x the protocol's fraction (None: none).

    Ring: LL at ``llMaxBw`` (total), LL128 at channels x ``perChMaxRingLL128Bw``. Tree: channels x
    ``perChMaxTreeBw`` x the protocol's tree fraction (1, LL 1/3.8, LL128 7/9 on one node and 120/128
    on more), LL also at ``llMaxBw``, LL128 also at channels x ``perChMaxTreeLL128Bw``. The cost model
    (:mod:`hwmodels.network.collectives`) applies the same ceilings, so the tuner never picks a
    protocol for bandwidth the cost then denies, nor the reverse."""
    m = view.nodes
    idx2 = min(m, 3) - 1
    s = view.arch_scale
    ll_max = _LL_MAX_BW[view.arch if m == 1 else (1 if view.amd_cpu else 0)][idx2] * s
    nch = channels(view, algo)
    caps: list[float] = []
    if algo == "ring":
        if proto == "ll":
            caps.append(ll_max)
        elif proto == "ll128":
            caps.append(nch * _RING_LL128_MAX_PER_CH[view.arch][idx2] * s)
    elif algo == "tree":
        tree_max = nch * _TREE_MAX_PER_CH[view.arch][idx2] * s   # applied before the protocol's fraction
        if proto == "ll":
            caps += [tree_max / 3.8, ll_max]
        elif proto == "ll128":
            caps += [tree_max * (7 / 9 if m == 1 else 120 / 128), nch * _TREE_LL128_MAX_PER_CH[view.arch][idx2] * s]
        else:
            caps.append(tree_max)
    return min(caps) * 1e9 if caps else None


def predicted_times(view: TunerView, nbytes: float, algos: tuple[str, ...]) -> dict[tuple[str, str], float]:
    """Seconds NCCL's tuner predicts for all-reduce of ``nbytes`` per (algorithm, protocol) it enables."""
    n, m, ppn = view.n, view.nodes, view.per_node
    out: dict[tuple[str, str], float] = {}
    log_size = int(math.log2(nbytes / 64)) if nbytes >= 128 else 0
    nsteps = 2 * (n - 1)
    inter_steps = 2 * m if m > 1 else 0   # NCCL 2.18 counts 2 x nNodes network steps
    for algo in algos:
        if algo == "nvls":
            if not view.nvls or m > 1:
                continue
            bw = min(view.ring_bw / 1e9, _BUS_CAP.get(view.arch, 1e9) * view.arch_scale) * 0.75
            out[("nvls", "simple")] = _NVLS_LAT_US * 1e-6 + nbytes / (bw * 1e9)
            continue
        graph_bw = _graph_bw(view, algo)
        for pi, proto in enumerate(_PROTOS):
            if proto == "ll128" and not (view.ll128_intra and (m == 1 or view.ll128_net)):
                continue
            cap_b = bus_caps(view, algo, proto)
            cap = math.inf if cap_b is None else cap_b / 1e9
            if algo == "ring":
                bus = graph_bw
                if proto == "ll":
                    bus = bus / 4
                elif proto == "ll128":
                    bus = bus * (0.7 if ppn < 2 else 0.92)
                alg_bw = min(bus, cap) * n / nsteps
            else:
                bus = graph_bw * 0.92
                if proto == "ll":
                    bus = bus / 3.8
                elif proto == "ll128":
                    bus = bus * (7 / 9 if m == 1 else 120 / 128)
                # min(min(b, T) x fraction, L) = min(b x fraction, T x fraction, L): bus_caps holds the last two
                alg_bw = min(bus, cap) * 0.5
                if log_size < len(_TREE_CORRECTION[pi]):
                    alg_bw *= _TREE_CORRECTION[pi][log_size]
            intra_lat = _HW_LAT[view.intra][algo][pi]
            inter_lat = _HW_LAT["net"][algo][pi]
            if m > 1 and proto == "ll":
                intra_lat *= 1.8
            lat = _BASE_LAT[algo][pi]
            if algo == "ring":
                if m == 1:
                    lat += nsteps * intra_lat
                else:
                    lat += (nsteps - inter_steps) * intra_lat + inter_steps * inter_lat
                    if proto == "simple" and nbytes >= n / 16 * 65536:
                        lat *= 1.9 if view.arch < 2 else 1.5   # "plateau effect of ring"
            else:
                lat += 2 * ((ppn - 1) * intra_lat + int(math.log2(m)) * inter_lat)
            out[(algo, proto)] = lat * 1e-6 + nbytes / (alg_bw * 1e9)
    return out


def choose(view: TunerView, nbytes: float, algos: tuple[str, ...]) -> tuple[str, str]:
    """NCCL's pick among ``algos`` (ring, tree, nvls) for an all-reduce of ``nbytes``."""
    times = predicted_times(view, nbytes, algos)
    return min(times, key=lambda k: times[k])
