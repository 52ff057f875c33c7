"""The pattern rewrites of the joint graph (`schedule`): each finds its pattern in a real
EcoTTA step and leaves every output of the graph (loss, logits, gradients, statistics) as
it was."""

from __future__ import annotations

import pytest
import torch

from edgeadapt.export import training_folds, training_passes

from .test_export_training import _ecotta, _stream


def _joint_graph():
    from torch.export.experimental import _export_forward_backward

    from edgeadapt.export.executorch_program import capture
    from edgeadapt.export.training import training_step_module

    step = training_step_module(_ecotta())
    inputs = step.example_inputs(_stream()[0])
    return _export_forward_backward(capture(step, inputs)), inputs


def _run(exported, inputs) -> tuple[torch.Tensor, ...]:
    """Every output of the joint graph, called with its parameters, buffers and constants."""
    from torch.export.graph_signature import InputKind

    user = iter(inputs)
    args = []
    for spec in exported.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            args.append(next(user))
        else:
            state = exported.state_dict
            args.append(
                state[spec.target] if spec.target in state else exported.constants[spec.target]
            )
    return tuple(exported.graph_module(*args))


def _count(exported, target) -> int:
    return sum(n.target is target for n in exported.graph_module.graph.nodes)


aten = torch.ops.aten


# fold, an op the pattern has and the fold removes (tiny_resnet's step: 3 L1 terms, 2
# downsampling shortcuts, each sliced in rows and columns)
FOLDS = [
    ("fold_sign_gradients", aten.where.self, 3),  # two wheres become one
    ("fold_abs", aten.where.self, 3),
    ("fold_scatter_adds", aten.full.default, 4),
]


@pytest.mark.parametrize("name, removed_op, expected", FOLDS)
def test_fold_finds_its_pattern_and_keeps_every_output(name, removed_op, expected):
    exported, inputs = _joint_graph()
    want = _run(exported, inputs)
    ops_before = _count(exported, removed_op)
    assert getattr(training_folds, name)(exported) == expected
    assert _count(exported, removed_op) <= ops_before - expected
    got = _run(exported, inputs)
    assert len(got) == len(want)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert getattr(training_folds, name)(exported) == 0  # nothing left to fold


def test_folds_leave_other_sums_alone():
    """A sum of two masked maps that is not |x|'s gradient (different masks) stays."""
    graph = torch.fx.Graph()
    x, m, k = (graph.placeholder(n) for n in ("x", "m", "k"))
    zero = graph.call_function(aten.scalar_tensor.default, (0,))
    a = graph.call_function(aten.where.self, (m, x, zero))
    b = graph.call_function(aten.where.self, (k, zero, x))
    out = graph.call_function(aten.add.Tensor, (a, graph.call_function(aten.neg.default, (b,))))
    graph.output(out)

    class _Exported:
        graph_module = torch.fx.GraphModule({}, graph)

    for node in graph.nodes:
        node.meta["val"] = torch.zeros(2, 2)
    assert training_folds.fold_sign_gradients(_Exported()) == 0


def test_split_conv_backward_keeps_the_gradients():
    """The trainable convolutions' backward as a weight gradient and a transposed
    convolution: the same gradients (to float rounding in eager PyTorch's kernels)."""
    exported, inputs = _joint_graph()
    want = _run(exported, inputs)
    assert training_passes.split_conv_backward(exported) > 0
    got = _run(exported, inputs)
    assert all(torch.allclose(g, w, rtol=1e-5, atol=1e-7) for g, w in zip(got, want))
    assert training_passes.split_conv_backward(exported) == 0


def test_memory_aware_order_keeps_every_output_and_is_a_valid_order():
    from edgeadapt.export.memory_order import memory_aware_order

    exported, inputs = _joint_graph()
    want = _run(exported, inputs)
    assert memory_aware_order(exported) > 0
    exported.graph_module.graph.lint()  # every op after its inputs
    got = _run(exported, inputs)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
