"""The inference-optimised model: :func:`optimize` rewrites a converted net's fx graph.

Passes, in order (each on the graph, none by hand per net):

1. ``identities``: Dropout (the identity at test time), Split, identity Power layers and
   ``nn.Identity`` disappear; their readers read the blob they pass on. (Silence layers never
   have a node.)
2. ``fold``: BatchNorm (stored statistics), Scale and Bias (a learned per-channel blob on axis 1)
   and linear Power (``power: 1``) fold into the Convolution, Deconvolution or InnerProduct
   (axis 1) before them, when that layer's output has no other reader and is not a blob the
   caller keeps; chains fold one after the other (conv -> BN -> Scale is one conv). Where nothing
   can absorb them, BatchNorm / Scale / Bias become one per-channel affine and the layers after
   fold into that.
3. ``pooling``: Caffe pooling takes torch's own kernel (no padding copy, no clamp) wherever that
   gives Caffe's result (the proof is in :mod:`caffe2torch.modules.fast`); ACROSS_CHANNELS LRN
   sums its window from shifted slices instead of a 3-D pooling.
4. ``inplace``: a ReLU / LeakyReLU / Sigmoid / TanH whose input is a fresh tensor nothing else
   reads runs in place on it, and so does an Eltwise SUM (no coefficients) on one of its inputs.
5. ``channels_last`` (optional): 4-D inputs and convolution weights in channels-last layout.

A value a pass removes (a convolution's output before the folded BatchNorm, a tensor updated in
place) is no longer a blob of the model: ``net(x, outputs=[name])`` refuses it, naming it and
the layer it went into; ``optimize(net, keep=[name])`` keeps it (the passes leave it alone).
"""
from __future__ import annotations

import copy
import operator
from collections.abc import Iterable

import torch
from torch import fx, nn

from caffe2torch.build import CaffeInfo, CaffeNet
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.modules.activations import Power
from caffe2torch.modules.basic import Concat, Eltwise, InnerProduct, Split
from caffe2torch.modules.fast import (
    ChannelAffine,
    ChannelLRN,
    InPlace,
    NativePool2d,
    SumInPlace,
)
from caffe2torch.modules.lrn import CaffeLRN
from caffe2torch.modules.normalization import Bias, CaffeBatchNorm, Scale
from caffe2torch.modules.pooling import CaffePool2d

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
DECONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NON_NEGATIVE = (nn.ReLU, nn.ReLU6, nn.Sigmoid)
Affine = tuple[torch.Tensor, torch.Tensor]  # per-channel (or 0-D) multiplier and offset, float64


def optimize(net: CaffeNet, *, keep: Iterable[str] = (), channels_last: bool | None = None,
             copy_modules: bool = True) -> CaffeNet:
    """The inference model of ``net``: same inputs and outputs, within float rounding (1e-5
    relative) of the plain net, faster (see the module docstring for what the passes do).

    ``keep`` names blobs that must stay readable with ``outputs=[...]`` (every blob the passes
    leave is readable anyway). ``channels_last`` runs the net in channels-last layout from its
    4-D inputs on (its outputs come back contiguous; blobs read with ``outputs=`` may have
    channels-last strides); ``None`` chooses it for nets with 2-D convolutions or pooling
    (:func:`wants_channels_last`).
    ``copy_modules=False`` takes the plain net's modules instead of copying them (the plain net
    must not be used afterwards; ``build(..., optimize=True)`` does this). The result is in eval
    mode and meant for inference: its folded layers always use the stored statistics.
    """
    if not isinstance(net, CaffeNet):
        raise Caffe2TorchError(f"optimize() takes a net built by caffe2torch.build, not "
                               f"{type(net).__name__}")
    work = _Work(net, keep, copy_modules)
    remove_identities(work)
    fold_affines(work)
    native_pooling(work)
    run_in_place(work)
    if wants_channels_last(net) if channels_last is None else channels_last:
        to_channels_last(work)
    return work.finish()


class _Work:
    """The graph being rewritten, its modules, and where each original value now lives."""

    def __init__(self, net: CaffeNet, keep: Iterable[str], copy_modules: bool) -> None:
        self.net = net
        self.graph = fx.Graph()
        self.graph.output(self.graph.graph_copy(net.graph, {}))
        children = dict(net.named_children())
        self.modules: dict[str, nn.Module] = copy.deepcopy(children) if copy_modules \
            else children
        for module in self.modules.values():  # the plain net's in-place ReLUs: see run_in_place
            if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
                module.inplace = False
        self.where: dict[str, fx.Node | None] = {n.name: n for n in self.graph.nodes}
        self.gone: dict[str, str] = {}  # original value -> the layer it went into
        self.changed: set[str] = set()  # modules no longer the Caffe layer's own
        keep = [keep] if isinstance(keep, str) else list(keep)
        unknown = [b for b in keep if b not in net.caffe.blob_nodes]
        if unknown:
            raise Caffe2TorchError(f"optimize(keep=...): no blob named {unknown} in net "
                                   f"'{net.caffe.graph.name}'; known blobs: "
                                   f"{sorted(net.caffe.blob_nodes)}")
        self.kept = {net.caffe.blob_nodes[b] for b in keep}
        self.passes: list[str] = []

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.modules.get(node.target) if node.op == "call_module" else None

    def sole_reader(self, node: fx.Node) -> bool:
        """``node``'s value is read once and is no blob the caller keeps (so it may change)."""
        return len(node.users) == 1 and not any(
            self.where.get(name) is node for name in self.kept)

    def replace(self, old: fx.Node, new: fx.Node) -> None:
        """``old``'s value is ``new``'s from now on: readers move to ``new``, ``old`` goes."""
        old.replace_all_uses_with(new)
        for name, node in self.where.items():
            if node is old:
                self.where[name] = new
        self.graph.erase_node(old)

    def forget(self, node: fx.Node, into: str) -> None:
        """``node``'s present value is lost (it went into the layer ``into``)."""
        for name, where in self.where.items():
            if where is node:
                self.where[name] = None
                self.gone[name] = into

    def absorb(self, producer: fx.Node, consumer: fx.Node, into: str) -> None:
        """``producer`` now computes ``consumer``'s value; its own value is gone (into ``into``)."""
        self.forget(producer, into)
        self.replace(consumer, producer)

    def finish(self) -> CaffeNet:
        self.graph.lint()
        used = {n.target for n in self.graph.nodes if n.op == "call_module"}
        modules = {name: m for name, m in self.modules.items() if name in used}
        info = self.net.caffe
        blob_nodes, folded = {}, dict(info.folded)  # (an optimised net optimised again)
        readable = set()
        for blob, name in info.blob_nodes.items():
            node = self.where.get(name)
            if node is not None:
                blob_nodes[blob] = node.name
                readable.add(node)
            else:
                folded[blob] = self.gone.get(name, "a removed layer")
        layer_nodes = {layer: [self.where[n].name for n in names]
                       for layer, names in info.layer_nodes.items()
                       if all(self.where.get(n) is not None for n in names)}
        result = CaffeNet(modules, self.graph, class_name=type(self.net).__name__)
        _eliminate_dead_code(result.graph, keep=readable)
        result.recompile()
        result.caffe = CaffeInfo(
            graph=info.graph, input_names=list(info.input_names),
            output_names=list(info.output_names), blob_nodes=blob_nodes,
            layer_nodes=layer_nodes,
            modules={layer: name for layer, name in info.modules.items()
                     if name in modules and name not in self.changed},
            folded=folded, passes=[*info.passes, *self.passes])
        result.caffe.weights_report = getattr(info, "weights_report", None)
        result.meta["_user_preserved_attributes"] = {"caffe": result.caffe}
        return result.eval()


def _eliminate_dead_code(graph: fx.Graph, keep: set) -> None:
    """fx's dead-code elimination, except for the alias views of shared blobs (``reshape_as``
    nodes a blob's name resolves to, see build._emit_aliases): they cost nothing and
    ``outputs=`` reads them, as in the plain net."""
    for node in reversed(graph.nodes):
        if node.op in ("placeholder", "output") or node.users:
            continue
        if node in keep and node.op == "call_method" and node.target == "reshape_as":
            continue
        graph.erase_node(node)


# ----------------------------------------------------------------------------- 1. identities


def remove_identities(work: _Work) -> None:
    for node in list(work.graph.nodes):
        module = work.module(node)
        if isinstance(module, Split):
            for user in list(node.users):
                if user.op == "call_function" and user.target is operator.getitem:
                    work.replace(user, node.args[0])
            if module.count == 1:
                work.replace(node, node.args[0])
            elif not node.users:
                work.graph.erase_node(node)
        elif _is_identity(module):
            work.replace(node, node.args[0])
    work.passes.append("identities")


def _is_identity(module: nn.Module | None) -> bool:
    if type(module) in (nn.Dropout, nn.Identity):
        return True
    return isinstance(module, Power) and module.constant is None and \
        (module.power, module.scale, module.shift) == (1.0, 1.0, 0.0)


# ----------------------------------------------------------------------------- 2. fold


def fold_affines(work: _Work) -> None:
    for node in list(work.graph.nodes):
        affine = _affine(work.module(node))
        if affine is None or len(node.args) != 1:
            continue
        source = node.args[0]
        target = work.module(source) if isinstance(source, fx.Node) else None
        if target is not None and work.sole_reader(source) and _fold_into(target, *affine):
            work.changed.add(source.target)
            work.absorb(source, node, into=f"{source.target} (with {node.target})")
        elif affine[0].dim() == 1 and not isinstance(work.module(node), ChannelAffine):
            dtype = _dtype(work.module(node))
            work.modules[node.target] = ChannelAffine(affine[0].to(dtype), affine[1].to(dtype))
            work.changed.add(node.target)
    work.passes.append("fold")


def _dtype(module: nn.Module) -> torch.dtype:
    return next(t for t in (*module.parameters(), *module.buffers())).dtype


def _affine(module: nn.Module | None) -> Affine | None:
    """The per-channel ``x * a + c`` (axis 1) a layer computes at inference, or None."""
    with torch.no_grad():
        if isinstance(module, CaffeBatchNorm):
            if module.use_global_stats is False:  # batch statistics, even at test time
                return None
            a = 1.0 / torch.sqrt(module.running_var.double() + module.eps)
            return a, -module.running_mean.double() * a
        if isinstance(module, Scale) and module.weight is not None and module.axis == 1 \
                and module.weight.dim() <= 1:
            a = module.weight.double()
            c = module.bias.double() if module.bias is not None else torch.zeros_like(a)
            return a, c
        if isinstance(module, Bias) and module.bias is not None and module.axis == 1 \
                and module.bias.dim() <= 1:
            return torch.ones_like(module.bias, dtype=torch.float64), module.bias.double()
        if isinstance(module, Power) and module.constant is None and module.power == 1.0:
            return (torch.tensor(module.scale, dtype=torch.float64),
                    torch.tensor(module.shift, dtype=torch.float64))
        if isinstance(module, ChannelAffine):
            return module.weight.double(), module.bias.double()
    return None


def _fold_into(module: nn.Module, a: torch.Tensor, c: torch.Tensor) -> bool:
    """Make ``module`` compute ``module(x) * a + c`` (per output channel); False if it cannot."""
    if type(module) in CONVS or type(module) in DECONVS:
        channels = module.out_channels
    elif type(module) is InnerProduct and module.axis == 1:
        channels = module.weight.shape[1 if module.transpose else 0]
    elif type(module) is ChannelAffine:
        channels = module.weight.shape[0]
    else:
        return False
    if a.dim() == 1 and a.shape[0] != channels or c.dim() == 1 and c.shape[0] != channels:
        return False
    a, c = a.expand(channels), c.expand(channels)
    with torch.no_grad():
        weight = module.weight.double()
        if type(module) in DECONVS:  # (in, out / groups, *k): scale each group's out axis
            g = module.groups
            shape = (g, weight.shape[0] // g, *weight.shape[1:])
            scale = a.reshape(g, 1, channels // g, *[1] * (weight.dim() - 2))
            weight = (weight.reshape(shape) * scale).reshape(weight.shape)
        elif type(module) is InnerProduct and module.transpose:
            weight = weight * a[None, :]
        else:
            weight = weight * a.reshape(-1, *[1] * (weight.dim() - 1))
        bias = module.bias.double() if module.bias is not None else torch.zeros_like(a)
        dtype = module.weight.dtype
        module.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
        module.bias = nn.Parameter((bias * a + c).to(dtype), requires_grad=False)
    return True


# ----------------------------------------------------------------------------- 3. pooling


def native_pooling(work: _Work) -> None:
    for node in work.graph.nodes:
        module = work.module(node)
        if type(module) is CaffeLRN and module.region == "ACROSS_CHANNELS":
            work.modules[node.target] = ChannelLRN(module.local_size, module.alpha,
                                                   module.beta, module.k)
            work.changed.add(node.target)
            continue
        if type(module) is not CaffePool2d or module.with_mask or \
                module.method not in ("MAX", "AVE"):
            continue
        clamp = not _non_negative(work, node.args[0])
        work.modules[node.target] = NativePool2d(
            module.method, module.kernel, module.stride, module.pad, module.ceil,
            module.global_pooling, clamp=clamp)
        work.changed.add(node.target)
    work.passes.append("pooling")


def _non_negative(work: _Work, node) -> bool:
    """True when ``node``'s value cannot hold -inf (or any negative number)."""
    if not isinstance(node, fx.Node):
        return False
    module = work.module(node)
    if type(module) in NON_NEGATIVE:
        return True
    if isinstance(module, (Concat, NativePool2d)) or \
            isinstance(module, Eltwise) and module.operation == "MAX":
        return all(_non_negative(work, arg) for arg in node.args)
    return False


# ----------------------------------------------------------------------------- 4. in place


_FRESH = (*CONVS, *DECONVS, InnerProduct, ChannelAffine, ChannelLRN, NativePool2d, Eltwise,
          Concat, InPlace, SumInPlace)
_ACTIVATIONS = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Sigmoid: "sigmoid",
                nn.Tanh: "tanh"}


def _fresh(work: _Work, node) -> bool:
    """``node`` is a new tensor that shares memory with no other value (safe to overwrite)."""
    return isinstance(node, fx.Node) and type(work.module(node)) in _FRESH


def _writable(work: _Work, node) -> bool:
    return _fresh(work, node) and work.sole_reader(node)


def run_in_place(work: _Work) -> None:
    for node in work.graph.nodes:
        module = work.module(node)
        if isinstance(module, Eltwise) and module.operation == "SUM" and not module.coeffs:
            into = next((i for i, a in enumerate(node.args)
                         if _writable(work, a) and node.args.count(a) == 1), None)
            if into is None:
                continue
            work.forget(node.args[into], into=str(node.target))
            work.modules[node.target] = SumInPlace(into)
        elif type(module) in _ACTIVATIONS and _writable(work, node.args[0]):
            work.forget(node.args[0], into=str(node.target))
            work.modules[node.target] = InPlace(_ACTIVATIONS[type(module)],
                                                getattr(module, "negative_slope", 0.0))
        else:
            continue
        work.changed.add(node.target)
    work.passes.append("inplace")


# ----------------------------------------------------------------------------- 5. layout


def to_channels_last(work: _Work) -> None:
    graph = work.net.caffe.graph
    four_d = {graph.blobs[b].name for b in graph.inputs
              if graph.blobs[b].shape is not None and len(graph.blobs[b].shape) == 4}
    for node in list(work.graph.nodes):
        if node.op == "placeholder" and node.target in four_d:
            with work.graph.inserting_after(node):
                converted = work.graph.call_method(
                    "contiguous", (node,), {"memory_format": torch.channels_last})
            node.replace_all_uses_with(converted, delete_user_cb=lambda user, mine=converted: user is not mine)
        module = work.module(node)
        if type(module) in (nn.Conv2d, nn.ConvTranspose2d):
            module.weight = nn.Parameter(
                module.weight.detach().contiguous(memory_format=torch.channels_last),
                requires_grad=False)
        if node.op == "output":  # the net's outputs come back in the usual layout
            with work.graph.inserting_before(node):
                node.args = (fx.map_arg(node.args[0], lambda value: work.graph.call_method(
                    "contiguous", (value,))),)
    work.passes.append("channels_last")


def wants_channels_last(net: CaffeNet) -> bool:
    """The default layout choice: channels-last wherever the net convolves or pools 4-D blobs
    (torch's CPU kernels for both are faster so; bench/bench_forward.py --explore measures)."""
    return any(type(m) in (nn.Conv2d, nn.ConvTranspose2d, CaffePool2d) for m in net.children())
