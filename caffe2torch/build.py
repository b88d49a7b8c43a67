"""Turn a shaped layer graph into a torch.fx GraphModule whose submodules are the Caffe layers."""
from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from caffe2torch.devices import Placement, place
from caffe2torch.errors import Caffe2TorchError, ShapeError
from caffe2torch.ir.graph import LayerNode, NetGraph
from caffe2torch.ir.memory import allocation_guard, check_memory
from caffe2torch.layers.registry import get_converter
from caffe2torch.modules.basic import InnerProduct
from caffe2torch.modules.pooling import CaffePool2d


@dataclass
class CaffeInfo:
    """What the converted model knows of its Caffe origin (``net.caffe``)."""

    graph: NetGraph
    input_names: list[str]
    output_names: list[str]
    blob_nodes: dict[str, str] = field(default_factory=dict)
    layer_nodes: dict[str, list[str]] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)
    #: optimize() only: blobs its passes removed -> the layer each went into; the passes applied
    folded: dict[str, str] = field(default_factory=dict)
    passes: list[str] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return self.graph.notes

    def unknown_blobs_error(self, names: list[str]) -> Caffe2TorchError:
        folded = [n for n in names if n in self.folded]
        if folded:
            where = ", ".join(f"'{n}' into {self.folded[n]}" for n in folded)
            return Caffe2TorchError(
                f"blob(s) {folded} of net '{self.graph.name}' were folded away by optimize() "
                f"({where}); optimize(net, keep={folded}) keeps them, or read them from the "
                "plain net")
        return Caffe2TorchError(f"no blob named {names} in net '{self.graph.name}'; "
                                f"known blobs: {sorted(self.blob_nodes)}")


class CaffeNet(fx.GraphModule):
    """A converted Caffe net: a GraphModule with Caffe blob access.

    ``net(x)`` returns the output blob (a tuple if there are several); inputs may be given by
    position in Caffe's input order or by Caffe blob name. ``net(x, outputs=["fc7", "pool5"])``
    returns a dict of the named blobs (any blob, intermediate ones included) from one forward pass.
    """

    caffe: CaffeInfo

    def recompile(self):
        result = super().recompile()
        type(self).__call__ = CaffeNet._call  # fx installs its own __call__ on every recompile
        return result

    def _call(self, *args, outputs: Iterable[str] | str | None = None, **kwargs):
        args = self._inputs_in_order(args, kwargs)
        if outputs is None:
            return self._located(lambda *a: self._wrapped_call(self, *a), *args)
        names = [outputs] if isinstance(outputs, str) else list(outputs)
        unknown = [n for n in names if n not in self.caffe.blob_nodes]
        if unknown:
            raise self.caffe.unknown_blobs_error(unknown)
        return self._located(self.blob_module({n: self.caffe.blob_nodes[n] for n in names}),
                             *args)

    def _located(self, run, *args):
        """``run(*args)``; an error inside a layer is raised again as a ShapeError naming the
        Caffe layer, the shapes it was given and the shapes it was built for."""
        try:
            return run(*args)
        except (RuntimeError, ValueError, IndexError) as err:
            if torch.compiler.is_compiling() or isinstance(err, Caffe2TorchError):
                raise
            found = _failing_layer(self, args)
            if found is None:
                raise
            raise ShapeError(f"{self.caffe.graph.definition.source}: {found}: {err}") from err

    def layer_outputs(self, *args, layers: Iterable[str] | None = None,
                      **kwargs) -> dict[str, list[torch.Tensor]]:
        """Each named layer's tops as that layer computed them (before later in-place layers)."""
        args = self._inputs_in_order(args, kwargs)
        names = list(self.caffe.layer_nodes) if layers is None else list(layers)
        unknown = [n for n in names if n not in self.caffe.layer_nodes]
        if unknown:
            raise Caffe2TorchError(f"no layer named {unknown} in net '{self.caffe.graph.name}'"
                                   + ("; optimize() folds layers away, the plain net has them"
                                      if self.caffe.passes else ""))
        wanted = {f"{n}\0{i}": node for n in names
                  for i, node in enumerate(self.caffe.layer_nodes[n])}
        values = self.blob_module(wanted)(*args)
        return {n: [values[f"{n}\0{i}"] for i in range(len(self.caffe.layer_nodes[n]))]
                for n in names}

    def _inputs_in_order(self, args: tuple, kwargs: Mapping[str, torch.Tensor]) -> tuple:
        names = self.caffe.input_names
        if not kwargs:
            if len(args) != len(names):
                raise TypeError(f"the net takes {len(names)} input(s) {names}, got {len(args)}")
            return args
        by_name = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names or key in by_name:
                raise TypeError(f"unexpected or repeated input '{key}'; the inputs are {names}")
            by_name[key] = value
        missing = [n for n in names if n not in by_name]
        if missing:
            raise TypeError(f"missing input(s) {missing}; the inputs are {names}")
        return tuple(by_name[n] for n in names)

    def blob_module(self, wanted: Mapping[str, str]) -> fx.GraphModule:
        """A GraphModule sharing this net's layers that returns ``{key: value of fx node}``."""
        cache = self.__dict__.setdefault("_blob_modules", {})
        key = tuple(wanted.items())
        if key not in cache:
            graph = fx.Graph(owning_module=self)
            graph.graph_copy(self.graph, {})
            nodes = {node.name: node for node in graph.nodes}
            targets = {k: nodes[v] for k, v in wanted.items()}
            moved = self._out_of_place(graph, set(targets.values()))
            graph.output({k: moved.get(node, node) for k, node in targets.items()})
            graph.eliminate_dead_code()
            cache[key] = fx.GraphModule(self, graph)
        return cache[key]

    def _out_of_place(self, graph: fx.Graph, read: set[fx.Node]) -> dict[fx.Node, fx.Node]:
        """An activation the forward runs in place (see :func:`_activations_in_place`) runs out
        of place where its input is read too (a layer's own output asked for by
        ``layer_outputs``); returns each replaced node's replacement."""
        moved: dict[fx.Node, fx.Node] = {}
        for node in list(graph.nodes):
            if node.op != "call_module" or not node.args or node.args[0] not in read:
                continue
            module = self.get_submodule(node.target)
            if not getattr(module, "inplace", False) or type(module) not in _IN_PLACE:
                continue
            slope = getattr(module, "negative_slope", 0.0)
            with graph.inserting_before(node):
                copy = graph.call_function(torch.nn.functional.leaky_relu, (node.args[0], slope)) \
                    if slope else graph.call_function(torch.relu, (node.args[0],))
            node.replace_all_uses_with(copy)
            graph.erase_node(node)
            moved[node] = copy
        return moved


_IN_PLACE = (nn.ReLU, nn.LeakyReLU)
#: Modules whose output is a new tensor that shares memory with no other value.
_FRESH_OUTPUT = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                 nn.ConvTranspose3d, InnerProduct, CaffePool2d)


def _activations_in_place(fx_graph: fx.Graph, modules: Mapping[str, nn.Module]) -> None:
    """ReLU runs in place (as Caffe's in-place ReLU does) where its input is the fresh output of
    a convolution, inner product or pooling that nothing else reads: the value it overwrites
    is no Caffe blob's final value, and :meth:`CaffeNet.blob_module` runs it out of place where
    ``layer_outputs`` asks for that value."""
    for node in fx_graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if type(module) not in _IN_PLACE or len(node.args) != 1:
            continue
        source = node.args[0]
        if (isinstance(source, fx.Node) and source.op == "call_module"
                and len(source.users) == 1
                and isinstance(modules.get(source.target), _FRESH_OUTPUT)):
            module.inplace = True


def _failing_layer(net: CaffeNet, args: tuple) -> str | None:
    """Run the net node by node and describe the first layer that fails on ``args``."""
    graph = net.caffe.graph
    by_module = {node.module_name: node for node in graph.layers}

    class _Finder(fx.Interpreter):
        failed: str | None = None

        def call_module(self, target, node_args, kwargs):
            try:
                return super().call_module(target, node_args, kwargs)
            except Exception:
                layer = by_module.get(str(target))
                if layer is None:
                    raise
                given = [tuple(a.shape) for a in node_args if isinstance(a, torch.Tensor)]
                built = [graph.blobs[b].shape for b in layer.bottoms]
                if [g[1:] for g in given] == [b[1:] for b in built if b is not None]:
                    raise  # the shapes it was built for (up to the batch): a value error
                inputs = ", ".join(
                    f"'{name}' {tuple(a.shape)}" for name, a in zip(net.caffe.input_names, args)
                    if isinstance(a, torch.Tensor))
                built_inputs = ", ".join(f"'{graph.blobs[b].name}' {graph.blobs[b].shape}"
                                         for b in graph.inputs)
                self.failed = (f"layer '{layer.name}' ({layer.type}) cannot take bottoms of "
                               f"shapes {given}; it was built for {built} (inputs given: "
                               f"{inputs}; built for: {built_inputs})")
                raise

    finder = _Finder(net)
    try:
        with torch.no_grad():
            finder.run(*args)
    except Exception:  # noqa: BLE001 - the first run's error is the one raised
        pass
    return finder.failed


def build_module(graph: NetGraph, *, deferred: bool = False) -> CaffeNet:
    """Build the GraphModule for a graph whose blob shapes are inferred.

    ``deferred=True`` creates the modules on the meta device (no memory, no initialisation):
    weight binding then materialises each module it fills completely, and :func:`materialize`
    rebuilds the rest. Loading a large caffemodel so costs one copy of each blob, not an
    initialisation of every parameter first.
    """
    check_memory(graph)
    if deferred:
        with torch.device("meta"):
            return _build_module(graph)
    return _build_module(graph)


def _build_module(graph: NetGraph) -> CaffeNet:
    fx_graph = fx.Graph()
    modules: dict[str, nn.Module] = {}
    values: dict[str, fx.Node] = {}
    for blob_id in graph.inputs:
        values[blob_id] = fx_graph.placeholder(graph.blobs[blob_id].name)
    for node in graph.layers:
        if node.role == "input" or not node.tops:
            continue
        inputs = [graph.blobs[b].shape for b in node.bottoms]
        with allocation_guard(graph, node):
            modules[node.module_name] = get_converter(node.type).build(node, inputs)
        _emit(fx_graph, node, graph, values)
        _emit_aliases(fx_graph, node, graph, values)
    outputs = [values[b] for b in graph.outputs]
    fx_graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
    _activations_in_place(fx_graph, modules)
    net = CaffeNet(modules, fx_graph, class_name=_class_name(graph.name))
    info = CaffeInfo(
        graph=graph,
        input_names=[graph.blobs[b].name for b in graph.inputs],
        output_names=[graph.blobs[b].name for b in graph.outputs],
        blob_nodes={name: values[blob_id].name for name, blob_id in graph.latest.items()
                    if blob_id in values},
        layer_nodes={node.name: [values[t].name for t in node.tops]
                     for node in graph.layers if all(t in values for t in node.tops)},
        modules={node.name: node.module_name for node in graph.layers if node.role != "input"},
    )
    net.caffe = info
    net.meta["_user_preserved_attributes"] = {"caffe": info}  # kept by GraphModule deepcopy
    return net.eval()


def _emit(fx_graph: fx.Graph, node: LayerNode, graph: NetGraph,
          values: dict[str, fx.Node]) -> None:
    args = tuple(values[b] for b in node.bottoms)
    if len(node.tops) == 1:
        values[node.tops[0]] = fx_graph.create_node(
            "call_module", node.module_name, args, name=node.module_name)
        return
    call = fx_graph.create_node("call_module", node.module_name, args, name=node.module_name)
    for i, top in enumerate(node.tops):
        values[top] = fx_graph.create_node(
            "call_function", operator.getitem, (call, i), name=graph.blobs[top].name)


def _emit_aliases(fx_graph: fx.Graph, node: LayerNode, graph: NetGraph,
                  values: dict[str, fx.Node]) -> None:
    """Blobs sharing memory with an in-place top take the written value, in their own shape."""
    for blob_id in node.alias_tops:
        written, previous = graph.blobs[blob_id].alias_of  # type: ignore[misc]
        values[blob_id] = fx_graph.create_node(
            "call_method", "reshape_as", (values[written], values[previous]),
            name=graph.blobs[blob_id].name)


def _class_name(net_name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in net_name).strip("_")
    return cleaned if cleaned and cleaned[0].isalpha() else "CaffeNet"


def is_deferred(module: nn.Module) -> bool:
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


def only_caffe_blobs(module: nn.Module) -> bool:
    """True when the module's tensors are exactly its Caffe blobs (loading defines all of them)."""
    names = {n for n, _ in module.named_parameters()} | {n for n, _ in module.named_buffers()}
    return names == set(getattr(module, "caffe_blobs", ()))


def rebuild_layer(net: CaffeNet, layer_name: str) -> nn.Module:
    """Build one layer's module again on the CPU, initialised, in place of the current one."""
    graph = net.caffe.graph
    node = graph.layers[[n.name for n in graph.layers].index(layer_name)] \
        if layer_name in net.caffe.modules else None
    if node is None:
        raise Caffe2TorchError(f"no layer named '{layer_name}' in net '{graph.name}'")
    inputs = [graph.blobs[b].shape for b in node.bottoms]
    with allocation_guard(graph, node):
        module = get_converter(node.type).build(node, inputs).train(net.training)
    net.add_submodule(node.module_name, module)
    return module


def materialize(net: CaffeNet, placement: Placement | None = None) -> CaffeNet:
    """Rebuild, initialised on the CPU, every module still on the meta device (then moved to
    ``placement``'s device and dtype when given)."""
    for node in net.caffe.graph.layers:
        if node.role != "input" and node.tops and is_deferred(net.get_submodule(node.module_name)):
            module = rebuild_layer(net, node.name)
            if placement is not None:
                place(module, placement)
    net.__dict__.pop("_blob_modules", None)
    return net
