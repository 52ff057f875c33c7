"""Back-propagation through a frozen residual block with a few feature maps of memory.

Autograd through a block y = post(chain(x) + shortcut(x)) (a ResNet basic block: chain = conv
→ BN → ReLU → conv → BN, post = ReLU) holds, at its busiest, the shortcut's gradient, the
gradient flowing down the chain, what a layer keeps for backward and that layer's input
gradient, and its BNs on batch statistics keep a feature map each from forward to backward.
Here a block whose parameters are all frozen is back-propagated by hand from a tape of 1-bit
ReLU masks and per-channel statistics (`BlockTape`), every gradient buffer this code's own and
overwritten in place, a quarter or a sixteenth of the batch at a time where a temporary is
needed:

- a frozen conv: the transposed convolution, into the gradient's own memory where the shapes
  match, and for the chain's first layer straight onto the shortcut's gradient (an identity
  shortcut);
- a ReLU: its mask;
- a BN on constant statistics (eval mode, or a stream BN below full weight): a per-channel
  scale;
- a BN on the batch's statistics: the last one in the chain keeps its input from the forward
  (normalised and turned into its input gradient in place); any other one replays the layers
  before it a quarter of the batch at a time, twice (Σ dy·x̂, then dx), with the statistics
  the tape holds, so that its input is never whole.

Besides the block's input, about two feature maps are alive while it back-propagates. The
forward is the block's own (so outputs are exactly the block's); gradients equal autograd's
up to float rounding. EcoTTA's recomputation (`edgeadapt.modules.meta`) uses it for the
frozen blocks of a part.

A block takes part by a method `residual_layers()` returning (chain, shortcut, post): its
forward must be `post(chain(x) + shortcut(x))` with chain a list of layers applied in turn. A
shortcut may offer `add_input_grad(grad_x, grad_out)` (add its input's gradient to `grad_x`);
an `nn.Identity` needs none, anything else goes through autograd.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeadapt.modules.lean import (
    _CHUNKS,
    _MASK_CHUNKS,
    _channel_dot,
    conv_input_grad,
    masked_grad,
    pack_positive,
)
from edgeadapt.modules.stream_norm import StreamBatchNorm2d, bn_stream_weight, stream_moments

__all__ = ["BlockTape", "block_backward", "block_forward", "block_vjp", "residual_layers"]

_RELUS = (nn.ReLU,)  # LeanReLU subclasses nn.ReLU
_DIMS = (0, 2, 3)


def residual_layers(block: nn.Module) -> tuple[list[nn.Module], nn.Module, nn.Module] | None:
    """(chain, shortcut, post) of a frozen residual block this module can back-propagate, or
    None (then use autograd): every layer of the chain a conv, BN or ReLU, post a ReLU, and
    no parameter trained."""
    get = getattr(block, "residual_layers", None)
    if get is None or any(p.requires_grad for p in block.parameters()):
        return None
    chain, shortcut, post = get()
    if not chain or not isinstance(post, _RELUS):
        return None
    for m in chain:
        conv = isinstance(m, nn.Conv2d) and m.padding_mode == "zeros"
        if not (
            (conv and not isinstance(m.padding, str)) or isinstance(m, (nn.BatchNorm2d, *_RELUS))
        ):
            return None
    return list(chain), shortcut, post


@dataclass
class _Norm:
    """A BN as the forward applied it: y = x·scale + shift per channel; `mean` and `r`
    (1/sqrt(var + eps)) where it normalised with the batch's statistics, else None."""

    scale: Tensor
    shift: Tensor
    mean: Tensor | None = None
    r: Tensor | None = None


@dataclass
class BlockTape:
    """What `block_backward` needs of a forward: per layer of the chain its input's shape
    (conv), its packed mask (ReLU) or its normalisation (BN, `_Norm`); the post-activation's
    mask; and the input of the chain's last BN on batch statistics."""

    records: list = field(default_factory=list)
    post_mask: Tensor | None = None
    kept: Tensor | None = None


def _norm(bn: nn.BatchNorm2d, x: Tensor) -> _Norm:
    """How `bn` normalises `x` (mirroring BatchNorm2d's and StreamBatchNorm2d's forward)."""
    mean = r = None
    if bn.training or bn.running_mean is None or bn.running_var is None:
        alpha = bn_stream_weight(bn, x.shape[0]) if isinstance(bn, StreamBatchNorm2d) else 1
        if alpha >= 1.0:  # the batch's own statistics: the gradient runs through them
            mean, var = _batch_moments(x)
            r = torch.rsqrt(var + bn.eps)
            mu, scale = mean, r
        else:
            mu, var = stream_moments(x, bn.running_mean, bn.running_var, alpha)
            scale = torch.rsqrt(var + bn.eps)
    else:
        mu, scale = bn.running_mean, torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach()
    shift = -mu * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach()
    return _Norm(scale, shift, mean, r)


def _batch_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of `x`, in two passes a sixteenth of the batch at
    a time (torch.var_mean is several times slower on CPU here)."""
    mean = x.mean(dim=_DIMS)
    m = mean.view(1, -1, 1, 1)
    step = -(-x.shape[0] // _MASK_CHUNKS)
    total = x.new_zeros(x.shape[1])
    for i in range(0, x.shape[0], step):
        d = x[i : i + step] - m
        total += d.mul_(d).sum(dim=_DIMS)
    return mean, total / (x.numel() // x.shape[1])


def block_forward(block: nn.Module, layers, x: Tensor) -> tuple[Tensor, BlockTape]:
    """The block's output on `x` (its own forward, no graph) and the tape for its backward.
    Convs and BNs are noted before they run (a BN tracking running statistics would have
    moved them after), ReLUs after."""
    chain, _, post = layers
    tape = BlockTape(records=[None] * len(chain))
    last_norm = max((i for i, m in enumerate(chain) if isinstance(m, nn.BatchNorm2d)), default=-1)

    def before(i: int):
        def hook(m: nn.Module, args) -> None:
            if isinstance(m, nn.Conv2d):
                tape.records[i] = args[0].shape
            else:
                tape.records[i] = norm = _norm(m, args[0])
                if i == last_norm and norm.r is not None:
                    tape.kept = args[0]

        return hook

    def after(i: int):
        def hook(_m, _args, out) -> None:
            tape.records[i] = pack_positive(out)

        return hook

    def after_post(_m, _args, out) -> None:
        tape.post_mask = pack_positive(out)

    handles = [
        m.register_forward_hook(after(i))
        if isinstance(m, _RELUS)
        else m.register_forward_pre_hook(before(i))
        for i, m in enumerate(chain)
    ]
    handles.append(post.register_forward_hook(after_post))
    try:
        with torch.no_grad():
            out = block(x)
    finally:
        for h in handles:
            h.remove()
    return out, tape


def block_vjp(block: nn.Module, layers, inputs: list[Tensor], grads: list[Tensor]) -> Tensor:
    """The gradient of the block's input popped from `inputs`, given its output's popped from
    `grads` (overwritten): `block_forward` for the tape, then `block_backward`."""
    tape = block_forward(block, layers, inputs[-1])[1]  # the output is not needed
    return block_backward(layers, tape, inputs, grads)


def block_backward(layers, tape: BlockTape, inputs: list[Tensor], grads: list[Tensor]) -> Tensor:
    """The gradient of the block's input (popped from `inputs`) given its output's (popped
    from `grads`; its memory is reused). Neither list keeps a reference meanwhile."""
    chain, shortcut, _ = layers
    x = inputs.pop()
    g = masked_grad(grads.pop(), tape.post_mask, in_place=True)
    through = g  # the shortcut's gradient: read, never written, until the chain's is done
    owned, joined = False, False
    for i in reversed(range(len(chain))):
        layer, record = chain[i], tape.records[i]
        if isinstance(layer, nn.Conv2d):
            conf = (record, layer.stride, layer.padding, layer.dilation, layer.groups)
            weight = layer.weight.detach()
            if i == 0 and owned and isinstance(shortcut, nn.Identity) and record == x.shape:
                g = conv_input_grad(g, weight, *conf, out=through, accumulate=True)
                joined = True
            elif owned and record == g.shape:
                g = conv_input_grad(g, weight, *conf, out=g)
            else:
                g = conv_input_grad(g, weight, *conf)
        elif isinstance(layer, nn.BatchNorm2d):
            g = _norm_grad(layer, record, g, owned, tape, chain[:i], x)
        else:
            g = masked_grad(g, record, in_place=owned)
        owned = True
    if not joined:
        _add_shortcut_grad(shortcut, g, through, x)
    return g


def _norm_grad(
    bn: nn.BatchNorm2d, norm: _Norm, dy: Tensor, owned: bool, tape: BlockTape, before, x: Tensor
) -> Tensor:
    """A BN's input gradient. On the batch's statistics: dx = γ·r·(dy − mean(dy) − x̂·mean(dy·x̂)),
    means per channel; x̂ from the input the tape kept, else from the layers `before` it
    replayed on `x`."""
    if norm.r is None:
        scale = norm.scale.view(1, -1, 1, 1)
        return dy.mul_(scale) if owned else dy * scale
    k = dy.shape[1] / dy.numel()
    gamma_r = (norm.r * bn.weight.detach() if bn.weight is not None else norm.r).view(1, -1, 1, 1)
    mean, r = norm.mean.view(1, -1, 1, 1), norm.r.view(1, -1, 1, 1)
    s_dy = dy.sum(dim=_DIMS)
    if tape.kept is not None:  # this BN's input, kept by the forward: overwritten here
        xhat = tape.kept.sub_(mean).mul_(r)
        tape.kept = None
        s_dyx = _channel_dot(xhat, dy)
        xhat.mul_((-k * s_dyx).view(1, -1, 1, 1)).add_(dy).sub_((k * s_dy).view(1, -1, 1, 1))
        return xhat.mul_(gamma_r)
    if not owned:
        dy = dy.clone()
    step = -(-dy.shape[0] // _CHUNKS)
    s_dyx = dy.new_zeros(dy.shape[1])
    for i in range(0, dy.shape[0], step):
        xhat = _replay(before, tape.records, x[i : i + step]).sub_(mean).mul_(r)
        s_dyx += (xhat * dy[i : i + step]).sum(dim=_DIMS)
    shift = (-k * s_dy).view(1, -1, 1, 1)
    for i in range(0, dy.shape[0], step):
        xhat = _replay(before, tape.records, x[i : i + step]).sub_(mean).mul_(r)
        rows = dy[i : i + step]
        rows.add_(shift).add_(xhat.mul_((-k * s_dyx).view(1, -1, 1, 1))).mul_(gamma_r)
    return dy


def _replay(layers, records, x: Tensor) -> Tensor:
    """`layers` (the start of the chain) applied again to rows `x` of the block's input, with
    the normalisations the tape holds: equal to the forward's values up to float rounding."""
    with torch.no_grad():
        for layer, record in zip(layers, records):
            if isinstance(layer, nn.Conv2d):
                w, b = layer.weight, layer.bias
                x = F.conv2d(x, w, b, layer.stride, layer.padding, layer.dilation, layer.groups)
            elif isinstance(layer, nn.BatchNorm2d):
                x = x * record.scale.view(1, -1, 1, 1) + record.shift.view(1, -1, 1, 1)
            else:
                x = F.relu(x)
    return x


def _add_shortcut_grad(shortcut: nn.Module, grad_x: Tensor, grad_out: Tensor, x: Tensor) -> None:
    if isinstance(shortcut, nn.Identity):
        grad_x.add_(grad_out)
        return
    add = getattr(shortcut, "add_input_grad", None)
    if callable(add):
        add(grad_x, grad_out)
        return
    leaf = x.detach().requires_grad_()
    with torch.enable_grad():
        (g,) = torch.autograd.grad(shortcut(leaf), leaf, grad_out)
    grad_x.add_(g)
