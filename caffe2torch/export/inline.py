"""Inline the source of module classes into one standalone file (imports hoisted, only the
statements the classes need, every name checked), for the ``.py`` export.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import inspect
import re
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from caffe2torch.errors import Caffe2TorchError

_ALLOWED_PACKAGES = frozenset({"torch", "typing_extensions", "__future__"})
_HELPER_NAMES = frozenset({"WEIGHTS", "load", "_restore"})


def inlined_source(classes: Iterable[type]) -> str:
    """Standalone source (imports, then the needed parts of the files) defining ``classes``:
    what :func:`export_python` writes for the caffe2torch module classes a net uses."""
    sources = _SourceSet()
    for cls in classes:
        sources.require_class(cls)
    sources.prune()
    sources.check_names()
    return "\n\n\n".join([sources.imports_text(), *sources.file_texts()]) + "\n"


def _identifier(name: str) -> str:
    cleaned = re.sub(r"\W", "_", name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"Net_{cleaned}"


def _free_name(name: str, taken: set[str]) -> str:
    while name in taken or name in _HELPER_NAMES or name in vars(builtins):
        name += "_"
    return name


# -- the inlined files


@dataclass(frozen=True)
class _Import:
    """An import of the output file: the name it binds, what that name means, the statement."""

    bound: str
    meaning: str
    line: str


def _import_module(module: str, alias: str | None = None) -> _Import:
    if alias:
        return _Import(alias, f"module {module}", f"import {module} as {alias}")
    return _Import(_top_package(module), f"module {_top_package(module)}", f"import {module}")


def _import_name(module: str, name: str, alias: str | None = None) -> _Import:
    meaning = f"{module}.{name}"
    with contextlib.suppress(ImportError, AttributeError):
        value = getattr(importlib.import_module(module), name)
        if isinstance(value, types.ModuleType):  # `from torch import nn` == `import torch.nn as nn`
            meaning = f"module {value.__name__}"
    line = f"from {module} import {name}" + (f" as {alias}" if alias and alias != name else "")
    return _Import(alias or name, meaning, line)


def _base_imports() -> list[_Import]:
    """What the generated class and loader use."""
    return [_import_module("os"), _import_name("pathlib", "Path"), _import_module("torch"),
            _import_name("torch", "nn")]


@dataclass(eq=False)
class _Statement:
    """A top-level statement of an inlined file: its lines (with the comments just above it),
    the names it binds and the names it uses; ``text`` for a generated ``alias = name``."""

    lines: range
    defines: set[str]
    uses: set[str]
    text: str = ""


@dataclass
class _SourceFile:
    """One file to inline: its lines, statements, hoisted imports and caffe2torch dependencies."""

    module: str
    path: str
    header: list[str]
    lines: list[str]
    statements: list[_Statement] = field(default_factory=list)
    dropped: set[int] = field(default_factory=set)  # imports, docstring, TYPE_CHECKING, __all__
    imports: list[_Import] = field(default_factory=list)
    inlined: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (module, name)
    aliases: dict[str, _Statement] = field(default_factory=dict)  # `y = x` for `import x as y`
    deps: list[str] = field(default_factory=list)

    def text(self, kept: set[_Statement]) -> str:
        """The file without the dropped lines and the statements not ``kept``."""
        drop = set(self.dropped)
        for statement in self.statements:
            if statement not in kept:
                drop.update(statement.lines)
        body = "\n".join(line for i, line in enumerate(self.lines) if i not in drop)
        aliases = [a.text for a in self.aliases.values() if a in kept]
        body = "\n".join(aliases + [re.sub(r"\n{4,}", "\n\n\n", body).strip("\n")])
        head = [f"# -- inlined from {self.path}"] + [f"# {line}".rstrip() for line in self.header]
        return "\n".join(head) + "\n\n" + body.strip("\n")


class _SourceSet:
    """The files to inline (dependencies first), pruned to what the net uses, and the imports."""

    def __init__(self) -> None:
        self.files: dict[str, _SourceFile] = {}
        self.imports: list[_Import] = _base_imports()
        self.roots: set[tuple[str, str]] = set()  # (module, name) the output must define
        self.kept: set[_Statement] = set()
        self.used_imports: set[tuple[str, str]] = set()
        self.needs_restore = False

    def require_class(self, cls: type) -> None:
        if _is_torch(cls):
            if not _torch_reference(cls).startswith("nn."):
                self.imports.append(_import_module(cls.__module__))
            return
        if cls.__qualname__ != cls.__name__:
            raise Caffe2TorchError(f"module class {cls.__module__}.{cls.__qualname__} is not "
                                   f"defined at the top level of its file; the .py export "
                                   f"inlines top-level classes only")
        self.require_name(cls.__module__, cls.__name__)

    def require_name(self, module: str, name: str) -> None:
        self.require_module(module)
        self.roots.add((module, name))

    def require_module(self, name: str, chain: tuple[str, ...] = ()) -> None:
        if name in self.files:
            return
        if name in chain:
            raise Caffe2TorchError(f"circular imports {' -> '.join(chain + (name,))}; the .py "
                                   f"export cannot order the inlined files")
        source = _read_source_file(name)
        for dep in source.deps:
            self.require_module(dep, chain + (name,))
        self.files[name] = source  # after its dependencies: dicts keep insertion order

    def prune(self) -> None:
        """Keep the statements defining what the roots need, resolving each name in the file
        that uses it (its own definitions, then what it imports), and the statements that
        define nothing (they may act on import)."""
        work = list(self.roots)
        for source in self.files.values():
            for statement in source.statements:
                if not statement.defines:
                    self.kept.add(statement)
                    work += [(source.module, n) for n in statement.uses]
        seen: set[tuple[str, str]] = set()
        while work:
            module, name = work.pop()
            if (module, name) in seen:
                continue
            seen.add((module, name))
            source = self.files[module]
            found = [s for s in source.statements if name in s.defines]
            if not found and name in source.inlined:
                work.append(source.inlined[name])
                found = [source.aliases[name]] if name in source.aliases else []
            elif not found:
                self.used_imports.add((module, name))  # an import, a builtin or a local name
            for statement in found:
                self.kept.add(statement)
                work += [(module, n) for n in statement.uses]

    def kept_imports(self) -> list[_Import]:
        return self.imports + [i for f in self.files.values() for i in f.imports
                               if (f.module, i.bound) in self.used_imports]

    def defined(self) -> dict[str, list[str]]:
        """Each name the kept statements bind -> the files binding it."""
        owners: dict[str, list[str]] = {}
        for source in self.files.values():
            for statement in [*source.aliases.values(), *source.statements]:
                if statement in self.kept:
                    for name in statement.defines:
                        if source.path not in owners.setdefault(name, []):
                            owners[name].append(source.path)
        return owners

    def bound_names(self) -> set[str]:
        return set(self.defined()) | {i.bound for i in self.kept_imports()}

    def check_names(self) -> None:
        """Every name bound once across the inlined files (one namespace in the output)."""
        owners = self.defined()
        meanings: dict[str, set[str]] = {}
        for item in self.kept_imports():
            meanings.setdefault(item.bound, set()).add(item.meaning)
        problems = [f"'{n}' is defined in {' and '.join(p)}" for n, p in owners.items()
                    if len(p) > 1]
        problems += [f"'{n}' is imported as {' and '.join(sorted(m))}"
                     for n, m in meanings.items() if len(m) > 1]
        problems += [f"'{n}' is imported and also defined in {owners[n][0]}"
                     for n in owners if n in meanings]
        problems += [f"'{n}' (defined in {owners[n][0]}) is a name the export itself writes"
                     for n in owners if n in _HELPER_NAMES]
        if problems:
            lines = "\n".join(f"  - {p}" for p in sorted(problems))
            raise Caffe2TorchError(f"the .py export puts the inlined files in one namespace, "
                                   f"where these names clash:\n{lines}")

    def imports_text(self) -> str:
        groups: list[set[str]] = [set(), set()]
        for item in self.kept_imports():
            groups[_top_package(item.line.split()[1]) in _ALLOWED_PACKAGES].add(item.line)
        return "\n\n".join("\n".join(sorted(g, key=lambda s: (s.startswith("from"),
                                                               s.split()[1], s)))
                           for g in groups if g)

    def file_texts(self) -> list[str]:
        return [source.text(self.kept) for source in self.files.values()
                if any(s in self.kept for s in [*source.statements, *source.aliases.values()])]


def _is_torch(cls: type) -> bool:
    return _top_package(cls.__module__) == "torch"


def _torch_reference(cls: type) -> str:
    if getattr(nn, cls.__name__, None) is cls:
        return f"nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _top_package(module: str) -> str:
    return module.split(".")[0]


def _read_source_file(name: str) -> _SourceFile:
    """A module's file, ready to inline: imports hoisted, caffe2torch imports become deps."""
    module = sys.modules.get(name) or importlib.import_module(name)
    try:
        path = inspect.getsourcefile(module) or name
        text = inspect.getsource(module)
    except (OSError, TypeError) as exc:
        raise Caffe2TorchError(f"module '{name}' has no Python source to inline: {exc}") from exc
    source = _SourceFile(module=name, path=_shown_path(path), header=[], lines=text.splitlines())
    for index, stmt in enumerate(ast.parse(text).body):
        span = range(_first_line(stmt, source.lines), stmt.end_lineno)
        if index == 0 and _is_docstring(stmt):
            source.header = inspect.cleandoc(stmt.value.value).splitlines()
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            _hoist_import(stmt, module, source)
        elif not (_is_type_checking_block(stmt) or _assigns_all(stmt)):
            _check_nested_imports(stmt, source.path)
            uses = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
            source.statements.append(_Statement(span, _bound_names(stmt), uses))
            continue
        source.dropped.update(span)
    return source


def _shown_path(path: str) -> str:
    import caffe2torch

    root = Path(caffe2torch.__file__).resolve().parent.parent
    with contextlib.suppress(ValueError):
        return Path(path).resolve().relative_to(root).as_posix()
    return Path(path).name


def _first_line(stmt: ast.stmt, lines: list[str]) -> int:
    """0-based first line of a statement: its decorators and the comment lines right above."""
    first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])]) - 1
    while first > 0 and lines[first - 1].lstrip().startswith("#"):
        first -= 1
    return first


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
        and isinstance(stmt.value.value, str)


def _is_type_checking_block(stmt: ast.stmt) -> bool:
    """``if TYPE_CHECKING:`` (annotations are strings in the output, so it is never needed)."""
    test = getattr(stmt, "test", None)
    return isinstance(stmt, ast.If) and not stmt.orelse and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _assigns_all(stmt: ast.stmt) -> bool:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else \
        [stmt.target] if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) else []
    return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)


def _bound_names(stmt: ast.stmt) -> set[str]:
    """The module-level names a top-level statement binds (not those inside functions)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    names: set[str] = set()
    for child in ast.iter_child_nodes(stmt):
        if isinstance(child, ast.stmt):
            names |= _bound_names(child)
        else:
            names |= {n.id for n in ast.walk(child)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def _hoist_import(stmt: ast.Import | ast.ImportFrom, module: types.ModuleType,
                  source: _SourceFile) -> None:
    where = f"{source.path} line {stmt.lineno}"
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            _check_package(alias.name, where)
            source.imports.append(_import_module(alias.name, alias.asname))
        return
    target = stmt.module or ""
    if stmt.level:
        package = module.__package__ or module.__name__.rpartition(".")[0]
        target = importlib.util.resolve_name("." * stmt.level + target, package)
    if target == "__future__":
        return
    for alias in stmt.names:
        if alias.name == "*":
            raise Caffe2TorchError(f"{where}: 'from {target} import *'; the .py export needs "
                                   f"the names a file imports")
        if _top_package(target) == "caffe2torch":
            _inline_import(target, alias, where, source)
        else:
            _check_package(target, where)
            source.imports.append(_import_name(target, alias.name, alias.asname))


def _inline_import(target: str, alias: ast.alias, where: str, source: _SourceFile) -> None:
    """``from caffe2torch.x import y``: inline the file that defines ``y`` before this one."""
    where = f"{where}: 'from {target} import {alias.name}'"
    owner = importlib.import_module(target)
    if not hasattr(owner, alias.name):
        raise Caffe2TorchError(f"{where}: {target} has no '{alias.name}'")
    value = getattr(owner, alias.name)
    if isinstance(value, types.ModuleType):
        raise Caffe2TorchError(f"{where} imports a module; the .py export inlines the names a "
                               f"file imports from caffe2torch, so import those names")
    defining, real = target, alias.name
    if inspect.isclass(value) or inspect.isfunction(value):
        defining, real = value.__module__, value.__name__
        if _top_package(defining) != "caffe2torch":
            raise Caffe2TorchError(f"{where}: '{alias.name}' comes from {defining}; import it "
                                   f"from there")
    if defining != source.module and defining not in source.deps:
        source.deps.append(defining)
    bound = alias.asname or alias.name
    source.inlined[bound] = (defining, real)
    if bound != real:
        source.aliases[bound] = _Statement(range(0), {bound}, set(), f"{bound} = {real}")


def _check_package(module: str, where: str) -> None:
    top = _top_package(module)
    if top == "caffe2torch":
        raise Caffe2TorchError(f"{where}: 'import {module}'; the .py export inlines only "
                               f"top-level 'from caffe2torch... import name' statements")
    if top not in _ALLOWED_PACKAGES and top not in sys.stdlib_module_names:
        raise Caffe2TorchError(f"{where} imports {module}; the standalone .py file may import "
                               f"only torch and the standard library")


def _check_nested_imports(stmt: ast.stmt, path: str) -> None:
    """Imports inside functions or blocks run later: they must not need caffe2torch either."""
    for node in ast.walk(stmt):
        where = f"{path} line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                _check_package(alias.name, where)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise Caffe2TorchError(f"{where}: a relative import inside a block; the .py "
                                       f"export cannot inline it")
            _check_package(node.module or "", where)
