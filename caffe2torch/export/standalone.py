"""``.py``: a standalone module source (needs only torch) and its weights beside it.

The file holds the inlined source of the caffe2torch module classes the net uses
(:mod:`caffe2torch.export.inline`), a class whose ``__init__`` builds the layers and whose
``forward`` is the fx code, and ``load()``.
"""
from __future__ import annotations

import ast
import inspect
import itertools
import keyword
import math
import sys
import textwrap
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from caffe2torch.build import CaffeNet
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.export.inline import (
    _check_package,
    _free_name,
    _identifier,
    _import_module,
    _import_name,
    _is_torch,
    _SourceSet,
    _top_package,
    _torch_reference,
)
from caffe2torch.export.registry import PathLike, register_exporter
from caffe2torch.export.state_dict import export_safetensors, export_state_dict

_MODULE_INTERNALS = frozenset(vars(nn.Module()))
_IGNORED_ATTRIBUTES = frozenset({"caffe_blobs"})  # caffe2torch's blob binding, not computation


@register_exporter(".py")
def export_python(net: CaffeNet, path: PathLike, *, weights: str = "pt") -> Path:
    """A standalone module source file plus its weights beside it (``<stem>.pt``, or
    ``<stem>.safetensors`` with ``weights="safetensors"``).

    The file needs only torch: the source of the caffe2torch module classes the net uses (their
    files, inlined), a class whose ``__init__`` builds the layers and whose ``forward`` is the fx
    code (Caffe layer names), and ``load()``, which returns the model with its weights.
    """
    path = Path(path)
    if weights not in ("pt", "safetensors"):
        raise Caffe2TorchError(f"weights='{weights}'; expected 'pt' or 'safetensors'")
    weights_path = path.with_name(f"{path.stem}.{weights}")
    source, class_name = _python_file(net, weights_path.name)
    _check_python_source(net, source, class_name, path)
    if weights == "pt":
        export_state_dict(net, weights_path)
    else:
        export_safetensors(net, weights_path)
    path.write_text(source, encoding="utf-8")
    return path


def python_source(net: CaffeNet, weights_name: str = "weights.pt") -> str:
    """The text of :func:`export_python`'s file (raises when something cannot be standalone)."""
    return _python_file(net, weights_name)[0]


def _python_file(net: CaffeNet, weights_name: str) -> tuple[str, str]:
    sources = _SourceSet()
    for module in net.modules():
        if module is not net:
            sources.require_class(type(module))
    forward, global_lines = _forward_source(net, sources)
    init = _init_source(net, sources)
    sources.prune()
    sources.check_names()
    class_name = _free_name(_identifier(type(net).__name__), sources.bound_names())
    graph = net.caffe.graph
    parts = [_file_header(net, class_name, weights_name) + "\n\n" + sources.imports_text(),
             *sources.file_texts()]
    if sources.needs_restore:
        parts.append(_RESTORE_SOURCE)
    if global_lines:
        parts.append("# -- generated: names the forward uses\n" + "\n".join(global_lines))
    parts.append(f"# -- generated: the net\nclass {class_name}(nn.Module):\n"
                 f'    """Caffe net {graph.name!r}: inputs {net.caffe.input_names}, outputs '
                 f'{net.caffe.output_names}."""\n\n{init}\n\n{forward}')
    parts.append(_LOADER_SOURCE.format(cls=class_name, weights=weights_name))
    return "\n\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n", class_name


def _file_header(net: CaffeNet, class_name: str, weights_name: str) -> str:
    from caffe2torch import __version__

    stem = Path(weights_name).stem
    inputs = ", ".join(_identifier(n) for n in net.caffe.input_names)
    if stem.isidentifier() and not keyword.iskeyword(stem):
        importing = f"    from {stem} import load\n"
    else:  # a file name no import statement can name: load it by its path
        importing = (f"    import importlib.util  # {stem}.py is not an importable module name\n"
                     f"    spec = importlib.util.spec_from_file_location("
                     f"{_identifier(stem)!r}, {stem + '.py'!r})\n"
                     "    module = importlib.util.module_from_spec(spec)\n"
                     "    spec.loader.exec_module(module)\n"
                     "    load = module.load\n")
    return (f'"""Caffe net {net.caffe.graph.name!r} as a standalone PyTorch module '
            f"(written by caffe2torch {__version__}).\n\n"
            f"Needs only torch; the weights are in {weights_name} beside this file:\n\n"
            f"{importing}"
            f"    model = load()  # a {class_name} with its weights, in eval mode\n"
            f"    y = model({inputs})\n"
            f'"""\nfrom __future__ import annotations')


_RESTORE_SOURCE = '''\
# -- generated: modules that no constructor call rebuilds, made from their attributes
def _restore(cls, attributes, parameters=None, buffers=None, children=None):
    """A ``cls`` with these attributes, zero tensors of these shapes and these submodules."""
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    module.__dict__.update(attributes)
    for name, spec in (parameters or {}).items():
        tensor = None if spec is None else nn.Parameter(torch.zeros(spec[0], dtype=spec[1]),
                                                        requires_grad=spec[2])
        module.register_parameter(name, tensor)
    for name, spec in (buffers or {}).items():
        module.register_buffer(name, None if spec is None else torch.zeros(spec[0], dtype=spec[1]))
    for name, child in (children or {}).items():
        module.add_module(name, child)
    return module'''

_LOADER_SOURCE = '''\
# -- generated: loading the weights
WEIGHTS = Path(__file__).with_name({weights!r})


def load(weights: str | os.PathLike[str] | None = None, map_location="cpu") -> {cls}:
    """A {cls} with the weights (default: the file beside this one), in eval mode."""
    path = Path(WEIGHTS if weights is None else weights)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path), device=str(map_location))
    else:
        state = torch.load(path, map_location=map_location, weights_only=True)
    with torch.device("meta"):  # no initialisation: every tensor comes from the file
        model = {cls}()
    model.load_state_dict(state, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model = {cls}()  # tensors the file does not hold: build them for real
        model.load_state_dict(state)
    return model.eval()'''



# -- the class: __init__ and forward


def _forward_source(net: CaffeNet, sources: _SourceSet) -> tuple[str, list[str]]:
    """The fx forward as a method, and the lines binding the globals it uses."""
    code = net.graph.python_code(root_module="self")
    src = "\n".join(line.rstrip() for line in code.src.strip("\n").splitlines())
    used = {node.id for node in ast.walk(ast.parse(src)) if isinstance(node, ast.Name)}
    lines = [line for name in sorted(used & set(code.globals))
             if (line := _global_binding(name, code.globals[name], sources))]
    return textwrap.indent(src, "    "), lines


def _global_binding(name: str, value: object, sources: _SourceSet) -> str:
    """How the output binds a global of the fx code: an import (returns ''), or a line."""
    if isinstance(value, types.ModuleType):
        _check_package(value.__name__, "the fx forward")
        alias = None if name == _top_package(value.__name__) else name
        sources.imports.append(_import_module(value.__name__, alias))
        return ""
    if isinstance(value, float):
        return f"{name} = float({str(value)!r})"
    if value is type(None):
        return f"{name} = type(None)"
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", "")
    if not module or not qualname or "." in qualname:
        raise Caffe2TorchError(f"the forward uses '{name}' ({value!r}), which the .py export "
                               f"cannot import")
    if _top_package(module) == "caffe2torch":
        sources.require_name(module, qualname)
        return "" if name == qualname else f"{name} = {qualname}"
    _check_package(module, "the fx forward")
    sources.imports.append(_import_name(module, qualname, name))
    return ""


def _init_source(net: CaffeNet, sources: _SourceSet) -> str:
    lines = ["    def __init__(self) -> None:", "        super().__init__()"]
    for name, tensor in net.named_parameters(recurse=False):
        lines.append(f"        self.{name} = nn.Parameter(torch.zeros({tuple(tensor.shape)}, "
                     f"dtype={tensor.dtype}), requires_grad={tensor.requires_grad})")
    for name, tensor in net.named_buffers(recurse=False):
        if name in net._non_persistent_buffers_set:
            raise Caffe2TorchError(f"the net's buffer '{name}' is not in its state_dict; the "
                                   f".py export loads every tensor from the weights file")
        lines.append(f"        self.register_buffer({name!r}, torch.zeros("
                     f"{tuple(tensor.shape)}, dtype={tensor.dtype}))")
    for name, child in net.named_children():
        lines.append(f"        self.{name} = {_module_expression(child, sources, name)}")
    return "\n".join(lines)


_MAX_GUESSES = 64


def _module_expression(module: nn.Module, sources: _SourceSet, where: str) -> str:
    """Source building ``module``'s structure: a verified constructor call, else ``_restore``."""
    for expression in _constructor_calls(module, sources, where):
        if _builds_same(expression, module):
            return expression
    sources.needs_restore = True
    return _restore_call(module, sources, where)


def _class_reference(cls: type) -> str:
    return _torch_reference(cls) if _is_torch(cls) else cls.__name__


def _constructor_calls(module: nn.Module, sources: _SourceSet, where: str) -> Iterator[str]:
    """Candidate constructor calls, most readable first; each is verified before use."""
    cls = type(module)
    text = repr(module)  # torch.nn's layers print as their call: Conv2d(3, 64, kernel_size=...)
    if _is_torch(cls) and not list(module.children()) and "\n" not in text \
            and text.startswith(cls.__name__ + "("):
        yield _class_reference(cls) + text[len(cls.__name__):]
    yield from _signature_calls(module, sources, where)


def _signature_calls(module: nn.Module, sources: _SourceSet, where: str) -> Iterator[str]:
    """``Cls(a, b=...)`` with ``__init__``'s arguments taken from the attributes, submodules or
    parameters of their names (a parameter's argument: a bool, whether it exists); a required
    argument found nowhere is guessed among the tensor shapes and sizes (``InnerProduct(240, 5)``,
    ``Scale(1, (64,))``), since the verification catches wrong guesses."""
    cls = type(module)
    try:
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return
    attributes, children = vars(module), dict(module.named_children())
    choices: list[tuple[inspect.Parameter, list[str]]] = []
    for parameter in parameters:
        name, default = parameter.name, parameter.default
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in children:
            choices.append((parameter, [_module_expression(children[name], sources,
                                                           f"{where}.{name}")]))
        elif name in attributes or (name in module._parameters and isinstance(default, bool)):
            actual = attributes[name] if name in attributes else \
                module._parameters[name] is not None
            value = _literal(actual)
            if value is None:
                return
            if default is parameter.empty or not _same_value(actual, default):
                choices.append((parameter, [value]))
        elif default is parameter.empty:
            choices.append((parameter, _size_guesses(module)))
    for values in itertools.islice(itertools.product(*(c for _, c in choices)), _MAX_GUESSES):
        args = []
        for (parameter, _), value in zip(choices, values):
            positional = not args and parameter.default is parameter.empty and \
                parameter.kind is not parameter.KEYWORD_ONLY
            args.append(value if positional else f"{parameter.name}={value}")
        yield f"{_class_reference(cls)}({', '.join(args)})"


def _size_guesses(module: nn.Module) -> list[str]:
    """The shapes of the module's own tensors, then their sizes, as literals."""
    shapes = [tuple(t.shape) for t in [*module._parameters.values(), *module._buffers.values()]
              if t is not None]
    sizes = [d for shape in shapes for d in shape]
    return list(dict.fromkeys([_literal(s) for s in shapes] + [repr(d) for d in sizes]))


def _same_value(a: object, b: object) -> bool:
    return type(a) is type(b) and _literal(a) == _literal(b)


def _builds_same(expression: str, module: nn.Module) -> bool:
    """Does ``expression`` (with the real classes, on the meta device) build a module of the same
    type, attributes, tensor shapes, submodules and values of tensors outside the state_dict?"""
    namespace: dict[str, object] = {"nn": nn, "torch": torch}
    for sub in module.modules():
        namespace.setdefault(type(sub).__name__, type(sub))
    loose = _loose_buffers(module)  # not in the state_dict: their values must match too
    try:
        with torch.device("cpu" if loose else "meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = eval(expression, namespace)
    except Exception:  # noqa: BLE001 - any failure only rules this candidate out
        return False
    if not isinstance(built, nn.Module) or _structure(built) != _structure(module):
        return False
    rebuilt = _loose_buffers(built)
    return all(torch.equal(rebuilt[k].cpu(), v.cpu()) for k, v in loose.items())


def _loose_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}": buffer for prefix, sub in module.named_modules()
            for name, buffer in sub._buffers.items()
            if buffer is not None and name in sub._non_persistent_buffers_set}


def _structure(module: nn.Module) -> tuple:
    """What must match for a rebuilt module to compute the same from the same state_dict."""
    attributes = tuple(sorted((k, type(v).__name__, _literal(v) or f"<{v!r}>")
                              for k, v in _plain_attributes(module).items()))
    parameters = tuple((n, None if p is None else (tuple(p.shape), p.dtype, p.requires_grad))
                       for n, p in module._parameters.items())
    buffers = tuple((n, None if b is None else (tuple(b.shape), b.dtype),
                     n in module._non_persistent_buffers_set) for n, b in module._buffers.items())
    children = tuple((n, _structure(c)) for n, c in module.named_children())
    return type(module).__qualname__, attributes, parameters, buffers, children


def _plain_attributes(module: nn.Module) -> dict[str, object]:
    return {k: v for k, v in vars(module).items()
            if k not in _MODULE_INTERNALS and k not in _IGNORED_ATTRIBUTES}


def _restore_call(module: nn.Module, sources: _SourceSet, where: str) -> str:
    what = f"module '{where}' ({type(module).__name__})"
    attributes = []
    for name, value in _plain_attributes(module).items():
        literal = _literal(value)
        if literal is None:
            raise Caffe2TorchError(f"{what}: attribute '{name}' = {value!r} is no Python "
                                   f"literal, and no constructor call rebuilds the module; the "
                                   f".py export cannot write it")
        attributes.append(f"{name!r}: {literal}")
    parameters = [f"{n!r}: " + ("None" if p is None else
                                f"({tuple(p.shape)}, {p.dtype}, {p.requires_grad})")
                  for n, p in module._parameters.items()]
    buffers = []
    for n, b in module._buffers.items():
        if n in module._non_persistent_buffers_set:
            raise Caffe2TorchError(f"{what}: buffer '{n}' is not in the state_dict, and no "
                                   f"constructor call rebuilds the module")
        buffers.append(f"{n!r}: " + ("None" if b is None else f"({tuple(b.shape)}, {b.dtype})"))
    children = [f"{n!r}: {_module_expression(c, sources, f'{where}.{n}')}"
                for n, c in module.named_children()]
    head = f"{_class_reference(type(module))}, {{{', '.join(attributes)}}}"
    rest = [f"{keyword}={{{', '.join(items)}}}" for keyword, items in
            (("parameters", parameters), ("buffers", buffers), ("children", children)) if items]
    if len(head) + sum(len(r) + 2 for r in rest) <= 70:
        return f"_restore({', '.join([head, *rest])})"
    return "_restore(\n" + ",\n".join(" " * 12 + arg for arg in [head, *rest]) + ")"


def _literal(value: object) -> str | None:
    """Python source that evaluates to ``value`` (with torch imported), or None."""
    if value is None or type(value) in (bool, int, str, bytes):
        return repr(value)
    if type(value) is float:
        return repr(value) if math.isfinite(value) else f"float({str(value)!r})"
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, torch.device):
        return f"torch.device({str(value)!r})"
    if type(value) in (tuple, list, set, frozenset):
        items = [_literal(v) for v in value]  # type: ignore[attr-defined]
        if any(i is None for i in items):
            return None
        if type(value) is tuple:
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if type(value) is list:
            return "[" + ", ".join(items) + "]"
        return f"{type(value).__name__}([{', '.join(items)}])"
    if type(value) is dict:
        pairs = [(_literal(k), _literal(v)) for k, v in value.items()]  # type: ignore[union-attr]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    return None


def _check_python_source(net: CaffeNet, source: str, class_name: str, path: Path) -> None:
    """Run the generated source as a module and build its class on the meta device: its
    state_dict must have the net's keys, shapes and dtypes."""
    name = f"_caffe2torch_export_check_{id(source)}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses and pickling look classes up there
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - our own output
        with torch.device("meta"):
            built = getattr(module, class_name)()
    except Exception as exc:
        raise Caffe2TorchError(f"{path}: the generated module does not build: "
                               f"{type(exc).__name__}: {exc}") from exc
    finally:
        del sys.modules[name]
    want = {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
    got = {k: (tuple(v.shape), v.dtype) for k, v in built.state_dict().items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:10]
        raise Caffe2TorchError(f"{path}: the generated module's state_dict differs from the "
                               f"net's (first differences: {diff})")
