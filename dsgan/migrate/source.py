"""Read an MMGeneration/MMagic Python config without executing it.

The file is parsed with `ast` and only an expression language that cannot run code is evaluated: literals,
`dict()`/`list()`/`tuple()` (with `**` of a dict, as in `dict(type='Normalize', **img_norm_cfg)`), arithmetic on
numbers (unary minus and powers included, as StyleGAN2's `0.99**g_reg_ratio`; every result must be a finite real
number within +-2**64), string/list/tuple concatenation, list/tuple repetition (`[127.5] * 3`), f-strings of such
values, indexing (`pipeline[-2]['params']`), names assigned earlier (in the file or its `_base_` files) and MMEngine's
`_base_.name.key` for the bases' variables. Statements are assignments: chained (`a = b = 1`), unpacking
(`lo, hi = 1, 4`), annotated, augmented (`x += [...]`) and into an item of a name or of a base variable
(`pipeline[2]['scale'] = (64, 64)`, `_base_.train_dataloader.batch_size = 8`). Everything else (imports, other
attribute access, calls other than dict/list/tuple, lambdas, comprehensions, loops, conditions...) is refused with the
file and line, so a config can never run code; so is any statement that builds or reads more than a million items.
`_base_` files are merged with MMEngine's rules: dicts merge recursively with the child winning, `_delete_=True`
replaces the base dict, lists are replaced, and two bases may not define the same top-level key.
"""

from __future__ import annotations

import ast
import copy
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsgan.errors import ConfigError
from dsgan.migrate.ledger import show

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_REFUSED = {
    ast.Attribute: "attribute access",
    ast.Lambda: "lambda",
    ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression",
    ast.Compare: "comparison",
    ast.BoolOp: "boolean operator",
    ast.IfExp: "conditional expression",
    ast.NamedExpr: "assignment expression",
    ast.Starred: "unpacking (*)",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.For: "a `for` loop",
    ast.While: "a `while` loop",
    ast.If: "an `if` statement",
    ast.FunctionDef: "a function definition",
    ast.ClassDef: "a class definition",
    ast.Delete: "a `del` statement",
    ast.With: "a `with` statement",
}
_INT_BITS = 64
"""Arithmetic results are bounded by +-2**64 (beyond any count or seed a config holds): without a bound,
`x = 9**9**9` or `x = x * x` repeated would build numbers until the reader hangs or runs out of memory."""
_MAX_FORMAT = 1000
"""The largest width or precision an f-string's format spec may ask for."""
_MAX_SIZE = 1_000_000
"""Characters plus container items one statement may build or read: real configs hold a few thousand, and the
limit stops `s = s + s` or `a = [a, a]` repeated from doubling a value until memory runs out."""


@dataclass
class Source:
    """The merged config: what MMEngine's `Config.fromfile` would return, plus where it came from."""

    path: Path
    values: dict[str, Any]
    files: list[Path]
    """Every file read, the config itself first, then its bases depth-first."""
    used_by: dict[str, set[str]] = field(default_factory=dict)
    """Top-level name -> top-level keys whose value read it (helper variables such as `dataset_type`)."""


def load_source(path: Path | str) -> Source:
    path = Path(path).resolve()
    files: list[Path] = []
    used_by: dict[str, set[str]] = {}
    values = _load(path, (), files, used_by)
    return Source(path, values, files, used_by)


def _load(path: Path, stack: tuple[Path, ...], files: list[Path], used_by: dict[str, set[str]]) -> dict[str, Any]:
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"{stack[-1]}: _base_ cycle: {chain}")
    if not path.is_file():
        where = f"{stack[-1]}: _base_ " if stack else ""
        raise ConfigError(f"{where}{path}: file not found")
    if path.suffix != ".py":
        raise ConfigError(f"{path}: only Python (.py) MMGeneration/MMagic configs are read")
    files.append(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        where = f"{path}:{exc.lineno}" if exc.lineno else str(path)
        raise ConfigError(f"{where}: not valid Python: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{path}: expressions nested too deeply to read") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (not UTF-8 at byte {exc.start})") from None
    except ValueError as exc:  # null bytes, in Python versions that do not raise SyntaxError for them
        raise ConfigError(f"{path}: not valid Python: {exc}") from None

    base_node = _find_base(tree)
    base: dict[str, Any] = {}
    if base_node is not None:
        base = _load_bases(path, _Evaluator(path, {}).eval(base_node.value), base_node, stack, files, used_by)
    try:
        own = _Evaluator(path, base).run(tree, used_by)
    except RecursionError:
        raise ConfigError(f"{path}: expressions nested too deeply to read") from None
    return merge(base, own)


def _find_base(tree: ast.Module) -> ast.Assign | None:
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in stmt.targets):
            return stmt
    return None


def _load_bases(
    path: Path, spec: Any, node: ast.Assign, stack: tuple[Path, ...], files: list[Path], used_by: dict[str, set[str]]
) -> dict[str, Any]:
    names = [spec] if isinstance(spec, str) else spec
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}:{node.lineno}: _base_ must be a path or a list of paths, got {spec!r}")
    merged: dict[str, Any] = {}
    owner: dict[str, Path] = {}
    for name in names:
        if "::" in name:
            raise ConfigError(
                f"{path}:{node.lineno}: _base_ {name!r} names a file inside an installed package; copy that file "
                "next to the config and refer to it by a relative path"
            )
        base_path = (path.parent / name).resolve()
        values = _load(base_path, (*stack, path), files, used_by)
        for key in values:
            if key in merged:
                raise ConfigError(
                    f"{path}:{node.lineno}: key {key!r} is defined by two _base_ files ({owner[key]} and "
                    f"{base_path}); MMEngine refuses duplicate keys among bases"
                )
            owner[key] = base_path
        merged.update(values)
    return merged


def merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """MMEngine's merge: dicts recursively (child wins), `_delete_=True` replaces, anything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict):
            value = dict(value)
            replace = value.pop("_delete_", False)
            if not replace and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
                continue
            value = _strip_delete(value)
        out[key] = copy.deepcopy(value)
    return out


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != "_delete_"}
    if isinstance(value, (list, tuple)):
        return type(value)(_strip_delete(v) for v in value)
    return value


class _Evaluator:
    """Evaluates one file's statements; `outer` holds the names its bases defined."""

    def __init__(self, path: Path, outer: dict[str, Any]) -> None:
        self.path = path
        self.outer = outer
        self.scope: dict[str, Any] = {}
        self.reads: set[str] = set()
        self.budget = _MAX_SIZE

    def refuse(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(
            f"{self.path}:{getattr(node, 'lineno', '?')}: {what} is not supported: configs are read without running "
            "them, so only literals, dict()/list()/tuple(), arithmetic, concatenation, repetition, indexing, "
            "f-strings and names assigned earlier are understood"
        )

    def too_large(self, node: ast.AST) -> ConfigError:
        return ConfigError(
            f"{self.path}:{getattr(node, 'lineno', '?')}: this statement builds or reads more than {_MAX_SIZE:,} "
            "items (characters plus list/dict entries): far beyond any real config, refused"
        )

    def run(self, tree: ast.Module, used_by: dict[str, set[str]]) -> dict[str, Any]:
        """The file's own top-level bindings (without `_base_`), in order; records which names each one read."""
        for stmt in tree.body:
            for name, value in self.statement(stmt):
                self.scope[name] = value
                for read in self.reads - {name}:  # `x += [...]` reads x itself
                    used_by.setdefault(read, set()).add(name)
        self.scope.pop("_base_", None)
        return self.scope

    def statement(self, stmt: ast.stmt) -> list[tuple[str, Any]]:
        """(name, value) for each name the statement binds; `self.reads` holds the names its value read."""
        self.reads = set()
        self.budget = _MAX_SIZE
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            return []  # a docstring
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            raise self._import_error(stmt)
        if isinstance(stmt, ast.With) and "read_base" in ast.unparse(stmt.items[0].context_expr):
            raise self._import_error(stmt)
        match stmt:
            case ast.Assign(targets=targets, value=node):
                value = self._bounded(stmt, self.eval(node))
                return [pair for target in targets for pair in self._bind(target, value)]
            case ast.AnnAssign(target=target, value=node) if node is not None:  # the annotation is not evaluated
                return self._bind(target, self._bounded(stmt, self.eval(node)))
            case ast.AugAssign(target=target, op=op, value=node) if type(op) in _BINARY:
                if not isinstance(target, (ast.Name, ast.Subscript)):
                    raise self._target_error(target)
                value = self._binary(stmt, op, self.eval(target), self.eval(node))
                return self._bind(target, self._bounded(stmt, value))
        what = _REFUSED.get(type(stmt), f"a `{type(stmt).__name__}` statement")
        raise self.refuse(stmt, what)

    def _bounded(self, stmt: ast.AST, value: Any) -> Any:
        if _size(value) > _MAX_SIZE:
            raise self.too_large(stmt)
        return value

    def _bind(self, target: ast.expr, value: Any) -> list[tuple[str, Any]]:
        """`name = v`, `a, b = v` (a tuple or list of as many items) or `name[k1][k2] = v` (an item of a value
        bound earlier, as MMagic's `train_pipeline[-2]['params']['quality'] = ...`)."""
        match target:
            case ast.Name(id=name):
                return [(name, copy.deepcopy(value))]
            case ast.Tuple(elts=elts) | ast.List(elts=elts) if not any(isinstance(e, ast.Starred) for e in elts):
                if not isinstance(value, (list, tuple)) or len(value) != len(elts):
                    raise ConfigError(
                        f"{self.path}:{target.lineno}: cannot unpack {show(value)} into {len(elts)} names"
                    )
                return [pair for e, item in zip(elts, value, strict=True) for pair in self._bind(e, item)]
            case ast.Subscript() | ast.Attribute():
                name, whole, keys = self._reference(target)
                in_base = _root(target) == "_base_"
                if not keys:  # `_base_.name = v`
                    whole = copy.deepcopy(value)
                container = whole
                for node, key in keys[:-1]:
                    container = self._index(node, container, key)
                if keys:
                    node, key = keys[-1]
                    in_dict = isinstance(container, dict) and isinstance(key, (str, int, float, bool))
                    in_list = (
                        isinstance(container, list) and type(key) is int and -len(container) <= key < len(container)
                    )
                    if not in_dict and not in_list:
                        where = f"{self.path}:{node.lineno}: `{ast.unparse(node)}`"
                        raise ConfigError(f"{where}: cannot set item {key!r} of {show(container)}")
                    container[key] = copy.deepcopy(value)
                whole = self._bounded(target, whole)
                if in_base:
                    # MMEngine changes the bases' variable itself; this file's own value of the name, if any, is
                    # still merged over it
                    self.outer[name] = whole
                    return []
                return [(name, whole)]
        raise self._target_error(target)

    def _reference(self, target: ast.Subscript | ast.Attribute) -> tuple[str, Any, list[tuple[ast.expr, Any]]]:
        """`name[k]...` or `_base_.name.k[i]...` as an assignment target: the top-level name, a copy of its value,
        and the keys that lead from it to the item (each with the node that gives it). `_base_.xxx` is MMEngine's
        name for a variable of the _base_ files; its attributes are dict keys, as in MMEngine's ConfigDict."""
        keys: list[tuple[ast.expr, Any]] = []
        node: ast.expr = target
        while isinstance(node, (ast.Subscript, ast.Attribute)):
            keys.append((node, self.eval(node.slice) if isinstance(node, ast.Subscript) else node.attr))
            node = node.value
        keys.reverse()
        if isinstance(node, ast.Name) and node.id == "_base_" and isinstance(keys[0][0], ast.Attribute):
            (first, name), keys = keys[0], keys[1:]
            return name, self._base_variable(first, name), keys
        if isinstance(node, ast.Name) and not any(isinstance(n, ast.Attribute) for n, _ in keys):
            return node.id, self._name(node, node.id), keys
        raise self._target_error(target)

    def _base_variable(self, node: ast.expr, name: str) -> Any:
        if name not in self.outer:
            raise ConfigError(f"{self.path}:{node.lineno}: `_base_.{name}`: the _base_ files define no {name!r}")
        return self._read(node, self.outer, name)

    def _target_error(self, target: ast.expr) -> ConfigError:
        return self.refuse(target, f"assignment to `{ast.unparse(target)}`")

    def _import_error(self, stmt: ast.stmt) -> ConfigError:
        text = ast.unparse(stmt).splitlines()[0]
        if "read_base" in text or "mmengine.config" in text:
            return ConfigError(
                f"{self.path}:{stmt.lineno}: `{text}`: new-style MMEngine configs (read_base() and imported classes) "
                "are not supported yet: use the `_base_ = [...]` form with type='...' strings"
            )
        return self.refuse(stmt, f"an import (`{text}`)")

    def eval(self, node: ast.AST) -> Any:
        match node:
            case ast.Constant(value=value):
                if value is None or isinstance(value, (bool, int, float, str)):
                    return value
                raise self.refuse(node, f"the literal {value!r}")
            case ast.JoinedStr(values=parts):
                return "".join(self._fstring_part(p) for p in parts)
            case ast.Subscript(value=container, slice=key):
                return copy.deepcopy(self._index(node, self.eval(container), self.eval(key)))
            case ast.Attribute(value=ast.Name(id="_base_"), attr=name):
                return self._base_variable(node, name)
            case ast.Attribute(value=container, attr=key) if _root(container) == "_base_":
                return copy.deepcopy(self._index(node, self.eval(container), key))
            case ast.List(elts=elts):
                return [self.eval(e) for e in elts]
            case ast.Tuple(elts=elts):
                return tuple(self.eval(e) for e in elts)
            case ast.Dict(keys=keys, values=values):
                return self._dict(node, keys, values)
            case ast.Set(elts=elts):
                if len(elts) == 1 and isinstance(elts[0], ast.Set):
                    raise self.refuse(node, "`{{_base_.xxx}}` substitution (write the value itself)")
                raise self.refuse(node, "a set literal")
            case ast.Name(id=name):
                return self._name(node, name)
            case ast.Call():
                return self._call(node)
            case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
                value = self.eval(operand)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise self.refuse(node, f"a sign applied to {value!r}")
                return _UNARY[type(op)](value)
            case ast.BinOp(op=op, left=left, right=right) if type(op) in _BINARY:
                return self._binary(node, op, self.eval(left), self.eval(right))
        what = _REFUSED.get(type(node), f"a `{type(node).__name__}` expression")
        if isinstance(node, ast.Attribute):
            what = f"attribute access (`{ast.unparse(node)}`)"
        raise self.refuse(node, what)

    def _fstring_part(self, part: ast.expr) -> str:
        """A literal piece, or `{value}` / `{value!r}` / `{value:spec}` of a number, string, bool or None."""
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            return part.value
        assert isinstance(part, ast.FormattedValue), type(part)
        value = self.eval(part.value)
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise self.refuse(part, f"an f-string of {show(value)} (only numbers and strings are formatted)")
        if part.conversion in (ord("r"), ord("a")):
            value = repr(value)
        spec = "" if part.format_spec is None else self.eval(part.format_spec)
        # a width or precision is the size of the text it makes: bound it before formatting (f'{1:999999999}')
        if any(int(n) > _MAX_FORMAT for n in re.findall(r"\d+", spec)):
            raise ConfigError(f"{self.path}:{part.lineno}: f-string format {spec!r}: wider than {_MAX_FORMAT}, refused")
        try:
            text = format(value, spec)
        except ValueError as exc:
            raise ConfigError(f"{self.path}:{part.lineno}: f-string format {spec!r}: {exc}") from None
        self.budget -= len(text)
        if self.budget < 0:
            raise self.too_large(part)
        return text

    def _index(self, node: ast.expr, container: Any, key: Any) -> Any:
        """`container[key]`: an item of a list, tuple or string by integer position, or of a dict by key."""
        if isinstance(container, dict) and isinstance(key, (str, int, float, bool)) and key in container:
            return container[key]
        if isinstance(container, (list, tuple, str)) and type(key) is int and -len(container) <= key < len(container):
            return container[key]
        raise ConfigError(
            f"{self.path}:{getattr(node, 'lineno', '?')}: `{ast.unparse(node)}`: no item {key!r} in {show(container)}"
        )

    def _read(self, node: ast.expr, scope: dict[str, Any], name: str) -> Any:
        """A copy of a bound value, counted against the statement's budget (reading a big value many times builds
        as much as writing it)."""
        self.reads.add(name)
        self.budget -= _size(scope[name])
        if self.budget < 0:
            raise self.too_large(node)
        return copy.deepcopy(scope[name])

    def _name(self, node: ast.Name, name: str) -> Any:
        for scope in (self.scope, self.outer):
            if name in scope:
                return self._read(node, scope, name)
        raise ConfigError(
            f"{self.path}:{node.lineno}: name {name!r} is not defined (only names assigned earlier in this file or "
            "in its _base_ files can be used)"
        )

    def _dict(self, node: ast.Dict, keys: list[ast.expr | None], values: list[ast.expr]) -> dict[Any, Any]:
        out = {}
        for key, value in zip(keys, values, strict=True):
            if key is None:  # {**other}: the other dict is evaluated like any value
                out.update(self._mapping(value))
                continue
            k = self.eval(key)
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise self.refuse(key, f"the dict key {k!r}")
            out[k] = self.eval(value)
        return out

    def _mapping(self, node: ast.expr) -> dict[Any, Any]:
        value = self.eval(node)
        if not isinstance(value, dict):
            raise self.refuse(node, f"`**` of {value!r} (only dicts unpack)")
        return value

    def _call(self, node: ast.Call) -> Any:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        if name not in ("dict", "list", "tuple"):
            text = ast.unparse(node)
            raise self.refuse(node, f"a call (`{text if len(text) <= 80 else text[:77] + '...'}`)")
        if name == "dict":
            if len(node.args) > 1:
                raise self.refuse(node, "dict() with more than one positional argument")
            # dict({'8': ...}, k=v), as mmgen's StyleGAN1 per-scale schedules write their (string) keys
            out: dict[Any, Any] = self._mapping(node.args[0]) if node.args else {}
            for kw in node.keywords:
                items = self._mapping(kw.value) if kw.arg is None else {kw.arg: self.eval(kw.value)}
                for key in items:
                    if key in out:
                        raise ConfigError(f"{self.path}:{node.lineno}: dict() gets the key {key!r} twice")
                out.update(items)
            return out
        if node.keywords or len(node.args) > 1:
            raise self.refuse(node, f"{name}() with more than one argument")
        elements = self.eval(node.args[0]) if node.args else []
        if not isinstance(elements, (list, tuple)):
            raise self.refuse(node, f"{name}() of {elements!r}")
        return list(elements) if name == "list" else tuple(elements)

    def _binary(self, node: ast.BinOp | ast.AugAssign, op: ast.operator, left: Any, right: Any) -> Any:
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
        joinable = isinstance(op, ast.Add) and type(left) is type(right) and isinstance(left, (str, list, tuple))
        # `[127.5] * 3`, as mmgen's Normalize steps write their mean and std (or `3 * [127.5]`)
        if isinstance(op, ast.Mult) and type(left) is int and isinstance(right, (list, tuple)):
            left, right = right, left
        repeated = isinstance(op, ast.Mult) and isinstance(left, (list, tuple)) and type(right) is int
        if not numbers and not joinable and not repeated:
            raise self.refuse(
                node,
                f"`{ast.unparse(node)}` (arithmetic is for numbers, + joins strings, lists and tuples, * repeats "
                "lists and tuples)",
            )
        if repeated:
            if len(left) * max(right, 0) > _MAX_SIZE:
                raise self.too_large(node)
            return left * right
        if joinable:
            if len(left) + len(right) > _MAX_SIZE:
                raise self.too_large(node)
            return _BINARY[type(op)](left, right)
        # An integer power is refused before it is computed when its result must pass the bound: |left| >= 2**k
        # gives |left|**right >= 2**(k * right).
        integers = isinstance(left, int) and isinstance(right, int)
        if isinstance(op, ast.Pow) and integers and right > 0 and (abs(left).bit_length() - 1) * right > _INT_BITS:
            raise self.out_of_range(node, op)
        try:
            value = _BINARY[type(op)](left, right)
        except ZeroDivisionError:
            raise ConfigError(f"{self.path}:{node.lineno}: division by zero in `{ast.unparse(node)}`") from None
        except OverflowError:  # float results beyond 1.8e308
            raise self.out_of_range(node, op) from None
        if isinstance(value, complex) or not math.isfinite(value) or abs(value) > 2**_INT_BITS:
            raise self.out_of_range(node, op)  # complex: a negative number to a fractional power
        return value

    def out_of_range(self, node: ast.BinOp | ast.AugAssign, op: ast.operator) -> ConfigError:
        what = "the power" if isinstance(op, ast.Pow) else "the arithmetic"
        return ConfigError(
            f"{self.path}:{node.lineno}: {what} `{ast.unparse(node)}` is refused: its result is not a finite real "
            f"number within +-2**{_INT_BITS} (no config holds one, and computing such numbers can hang the reader)"
        )


def _root(node: ast.expr) -> str | None:
    """The name a chain of subscripts and attributes starts from (`_base_` in `_base_.a[0].b`)."""
    while isinstance(node, (ast.Subscript, ast.Attribute)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _size(value: Any) -> int:
    """Characters plus container items, counted up to just past _MAX_SIZE."""
    total, stack = 0, [value]
    while stack and total <= _MAX_SIZE:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
            total += len(item) + 1
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
            total += len(item) + 1
        else:
            total += len(item) if isinstance(item, str) else 1
    return total
