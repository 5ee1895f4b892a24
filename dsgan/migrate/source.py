"""Read an MMGeneration/MMagic Python config without executing it.

The file is parsed with `ast` and only a small expression language is evaluated: literals, `dict()`/`list()`/
`tuple()` (with `**` of a dict, as in `dict(type='Normalize', **img_norm_cfg)`), arithmetic on numbers (powers
included, as StyleGAN2's `0.99**g_reg_ratio`; every result must be a finite real number within +-2**64),
string/list concatenation, list repetition (`[127.5] * 3`) and names assigned earlier (in the file or its `_base_`
files). Everything else (imports, attribute access, other calls, lambdas, comprehensions...) is refused with the file
and line, so a config can never run code. `_base_` files are merged with MMEngine's rules: dicts merge recursively
with the child winning, `_delete_=True` replaces the base dict, lists are replaced, and two bases may not define the
same top-level key.
"""

from __future__ import annotations

import ast
import copy
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsgan.errors import ConfigError

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
    ast.Subscript: "subscript",
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
}
_INT_BITS = 64
"""Arithmetic results are bounded by +-2**64 (beyond any count or seed a config holds): without a bound,
`x = 9**9**9` or `x = x * x` repeated would build numbers until the reader hangs or runs out of memory."""
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
            f"{self.path}:{getattr(node, 'lineno', '?')}: {what} is not allowed: configs are read without running "
            "them, so only literals, dict()/list()/tuple(), arithmetic, string concatenation and names assigned "
            "earlier are understood"
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
                for read in self.reads:
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
        if not isinstance(stmt, ast.Assign):
            raise self.refuse(stmt, f"a `{type(stmt).__name__}` statement")
        names = []
        for target in stmt.targets:
            if not isinstance(target, ast.Name):
                raise self.refuse(target, f"assignment to `{ast.unparse(target)}`")
            names.append(target.id)
        value = self.eval(stmt.value)
        if _size(value) > _MAX_SIZE:
            raise self.too_large(stmt)
        return [(name, copy.deepcopy(value)) for name in names]

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
                texts = [p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str)]
                if len(texts) == len(parts):
                    return "".join(texts)
                raise self.refuse(node, "an f-string with expressions")
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

    def _name(self, node: ast.Name, name: str) -> Any:
        for scope in (self.scope, self.outer):
            if name in scope:
                self.reads.add(name)
                self.budget -= _size(scope[name])
                if self.budget < 0:
                    raise self.too_large(node)
                return copy.deepcopy(scope[name])
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
            if node.args:
                raise self.refuse(node, "dict() with positional arguments")
            out: dict[str, Any] = {}
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

    def _binary(self, node: ast.BinOp, op: ast.operator, left: Any, right: Any) -> Any:
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
        joinable = isinstance(op, ast.Add) and type(left) is type(right) and isinstance(left, (str, list, tuple))
        # `[127.5] * 3`, as mmgen's Normalize steps write their mean and std
        repeated = isinstance(op, ast.Mult) and isinstance(left, (list, tuple)) and type(right) is int
        if not numbers and not joinable and not repeated:
            raise self.refuse(
                node, f"`{ast.unparse(node)}` (arithmetic is for numbers, + joins strings and lists, * repeats lists)"
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

    def out_of_range(self, node: ast.BinOp, op: ast.operator) -> ConfigError:
        what = "the power" if isinstance(op, ast.Pow) else "the arithmetic"
        return ConfigError(
            f"{self.path}:{node.lineno}: {what} `{ast.unparse(node)}` is refused: its result is not a finite real "
            f"number within +-2**{_INT_BITS} (no config holds one, and computing such numbers can hang the reader)"
        )


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
