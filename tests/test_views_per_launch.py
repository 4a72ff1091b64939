"""``hwmodels.validate_torch.views_per_launch``: view ops per kernel launch of a traced step (no torch needed)."""

from __future__ import annotations

import pytest

from hwmodels.validate_torch import views_per_launch
from workloads.pytorch.tracer import AtenClass, TracedOp


def _op(i: int, aten: str, aclass: AtenClass) -> TracedOp:
    return TracedOp(index=i, aten=aten, overload="", aclass=aclass, kind=None, inputs=(), outputs=(), flops=0.0,
                    bytes_read=0.0, bytes_written=0.0, deps=(), stream=0, scope="", call=0, backward=False)


# An attention block's projection as eager PyTorch issues it: the weight's transpose and the activations'
# reshapes are metadata ops, the matmul, the residual add and the copy launch kernels.
STEP = [_op(0, "aten::view", AtenClass.VIEW), _op(1, "aten::t", AtenClass.VIEW),
        _op(2, "aten::mm", AtenClass.GEMM), _op(3, "aten::_unsafe_view", AtenClass.VIEW),
        _op(4, "aten::transpose", AtenClass.VIEW), _op(5, "aten::add", AtenClass.ELEMENTWISE),
        _op(6, "aten::reshape", AtenClass.VIEW), _op(7, "aten::copy_", AtenClass.COPY)]


def test_views_per_launch_of_a_hand_built_step() -> None:
    """STEP has 5 VIEW ops (view, t, _unsafe_view, transpose, reshape) and 3 that launch a kernel (mm, add,
    copy_): 5 / 3 views per launch."""
    assert views_per_launch(STEP) == pytest.approx(5 / 3, rel=1e-12)


def test_every_non_view_class_is_a_launch() -> None:
    """Each class but VIEW runs a kernel: one view with one op of any other class is 1 view per launch, and a
    FILL (zeros) added to STEP makes it 5 / 4."""
    for cls in AtenClass:
        if cls is not AtenClass.VIEW:
            assert views_per_launch([_op(0, "aten::view", AtenClass.VIEW), _op(1, "x", cls)]) == 1.0, cls
    assert views_per_launch([*STEP, _op(8, "aten::zeros", AtenClass.FILL)]) == pytest.approx(5 / 4, rel=1e-12)


def test_no_launch_is_an_error() -> None:
    """Views alone (or nothing) have no launch to divide by: a ValueError naming the count, not a ZeroDivisionError."""
    with pytest.raises(ValueError, match="none of the 2 ops"):
        views_per_launch([_op(0, "aten::view", AtenClass.VIEW), _op(1, "aten::t", AtenClass.VIEW)])
    with pytest.raises(ValueError, match="none of the 0 ops"):
        views_per_launch([])
