"""Formulas typed by users (``exp(-x**2/2) * (1 + sin(3*x)**2)``), evaluated without ``eval``.

>>> f = compile_expression("exp(-x**2/2) * (1 + sin(3*x)**2)")
>>> f(np.linspace(-3, 3, 7))            # a numpy array of the same shape

The text is parsed with :mod:`ast` and every node is checked against a whitelist before anything
runs: numbers, the variables named by the caller (``x``, ``y``), ``+ - * / // % **``, comparisons,
``and``/``or``/``not`` (elementwise), and positional calls of the numpy functions in :data:`FUNCTIONS`.
Anything else is refused with a sentence naming what is not allowed: attribute access, subscripts,
strings, lambdas, comprehensions, keyword arguments, starred arguments, any other name (checked after
Python's NFKC folding, so ``_＿class_＿`` is the name ``__class__`` and refused like it).

The checked tree is turned into nested closures that call numpy directly, so no code object built
from user text is ever executed. Bounds keep a formula from freezing the process: at most
:data:`MAX_LENGTH` characters and :data:`MAX_NODES` nodes, and every number is a float64 (so
``9**9**9`` is ``inf`` at once rather than a Python integer with billions of digits).
"""

from __future__ import annotations

import ast
import operator
import unicodedata
from collections.abc import Callable

import numpy as np

from studio.errors import StudioError

Array = np.ndarray
MAX_LENGTH = 500
MAX_NODES = 200
MAX_ARGS = 3

FUNCTIONS: dict[str, tuple[Callable, int, int]] = {  # name -> (numpy function, min args, max args)
    "exp": (np.exp, 1, 1), "log": (np.log, 1, 1), "log1p": (np.log1p, 1, 1), "sqrt": (np.sqrt, 1, 1),
    "sin": (np.sin, 1, 1), "cos": (np.cos, 1, 1), "tan": (np.tan, 1, 1), "tanh": (np.tanh, 1, 1),
    "arctan": (np.arctan, 1, 1), "abs": (np.abs, 1, 1),
    "where": (np.where, 3, 3), "minimum": (np.minimum, 2, 2), "maximum": (np.maximum, 2, 2),
}
CONSTANTS = {"pi": float(np.pi), "e": float(np.e)}

_BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide,
           ast.FloorDiv: np.floor_divide, ast.Mod: np.mod, ast.Pow: np.power}
_UNARY = {ast.USub: np.negative, ast.UAdd: np.positive, ast.Not: np.logical_not}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}
_BOOL = {ast.And: np.logical_and, ast.Or: np.logical_or}

# what a refused node is called in the error message
_NAMES = {ast.Attribute: "attribute access (a.b)", ast.Subscript: "subscripts (a[i])", ast.Lambda: "lambdas",
          ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
          ast.GeneratorExp: "comprehensions", ast.List: "lists", ast.Tuple: "tuples", ast.Dict: "dicts",
          ast.Set: "sets", ast.Starred: "starred arguments", ast.IfExp: "if-else (use where(cond, a, b))",
          ast.NamedExpr: "assignments (:=)", ast.JoinedStr: "strings", ast.Await: "await",
          ast.Yield: "yield", ast.YieldFrom: "yield", ast.Slice: "slices"}


def _refuse(expr: str, what: str) -> StudioError:
    allowed = ", ".join([*sorted(FUNCTIONS), *sorted(CONSTANTS)])
    shown = expr if len(expr) <= 80 else expr[:77] + "..."
    return StudioError(f"formula {shown!r} uses {what}, which is not allowed; use numbers, the variables, "
                       f"arithmetic, comparisons and {allowed}")


def compile_expression(expr: str, names: tuple[str, ...] = ("x",)) -> Callable[..., Array]:
    """A numpy function of ``names`` from a formula; raises StudioError for anything not whitelisted.

    Returns ``f(*arrays) -> float array`` (broadcast like numpy); evaluation ignores floating-point
    warnings (``log(0)`` is ``-inf``, ``1/0`` is ``inf``), so callers check finiteness themselves.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise StudioError("the formula is empty; type one such as exp(-x**2/2)")
    if len(expr) > MAX_LENGTH:
        raise StudioError(f"the formula is {len(expr)} characters long; keep it under {MAX_LENGTH}")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        msg = getattr(exc, "msg", None) or "it cannot be parsed"
        raise StudioError(f"formula {expr!r} is not valid: {msg}") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_NODES:
        raise StudioError(f"the formula has {count} parts; keep it under {MAX_NODES}")
    variables = {unicodedata.normalize("NFKC", n): i for i, n in enumerate(names)}
    fn = _build(tree.body, expr, variables)

    def f(*args: Array) -> Array:
        if len(args) != len(names):
            raise TypeError(f"the formula takes {len(names)} arrays ({', '.join(names)}), got {len(args)}")
        arrays = [np.asarray(a, dtype=float) for a in args]
        with np.errstate(all="ignore"):
            return np.asarray(fn(arrays), dtype=float)

    return f


def _build(node: ast.AST, expr: str, variables: dict[str, int]) -> Callable[[list[Array]], Array]:
    """A closure computing ``node`` from the variable arrays; refuses any node not whitelisted."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise _refuse(expr, "strings or other non-number constants" if isinstance(node.value, (str, bytes))
                          else f"the constant {node.value!r}")
        value = np.float64(node.value) if abs(node.value) < 1e308 else np.float64(np.inf)
        return lambda _v: value
    if isinstance(node, ast.Name):
        name = unicodedata.normalize("NFKC", node.id)  # ast already folds; fold again to be sure
        if name in variables:
            i = variables[name]
            return lambda v: v[i]
        if name in CONSTANTS:
            c = CONSTANTS[name]
            return lambda _v: c
        known = ", ".join([*variables, *sorted(CONSTANTS)])
        raise _refuse(expr, f"the name {name!r} (known names: {known}; functions must be called)")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op, left, right = _BINARY[type(node.op)], _build(node.left, expr, variables), _build(node.right, expr,
                                                                                                variables)
        return lambda v: op(left(v), right(v))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        op, operand = _UNARY[type(node.op)], _build(node.operand, expr, variables)
        return lambda v: op(operand(v))
    if isinstance(node, ast.BoolOp) and type(node.op) in _BOOL:
        op, parts = _BOOL[type(node.op)], [_build(p, expr, variables) for p in node.values]

        def boolean(v):
            out = parts[0](v)
            for p in parts[1:]:
                out = op(out, p(v))
            return out
        return boolean
    if isinstance(node, ast.Compare) and all(type(o) in _COMPARE for o in node.ops):
        ops = [_COMPARE[type(o)] for o in node.ops]
        terms = [_build(node.left, expr, variables), *(_build(c, expr, variables) for c in node.comparators)]

        def compare(v):  # a < b < c means (a < b) and (b < c), elementwise
            values = [t(v) for t in terms]
            out = ops[0](values[0], values[1])
            for k, op in enumerate(ops[1:], 1):
                out = np.logical_and(out, op(values[k], values[k + 1]))
            return out
        return compare
    if isinstance(node, ast.Call):
        return _build_call(node, expr, variables)
    what = _NAMES.get(type(node))
    if what is None:
        what = f"the operator {type(node.op).__name__}" if hasattr(node, "op") else type(node).__name__
    raise _refuse(expr, what)


def _build_call(node: ast.Call, expr: str, variables: dict[str, int]) -> Callable[[list[Array]], Array]:
    if not isinstance(node.func, ast.Name):
        raise _refuse(expr, "a call of something other than the listed functions")
    name = unicodedata.normalize("NFKC", node.func.id)
    if name not in FUNCTIONS:
        raise _refuse(expr, f"the function {name!r}")
    if node.keywords:
        raise _refuse(expr, "keyword arguments")
    fn, lo, hi = FUNCTIONS[name]
    if not lo <= len(node.args) <= min(hi, MAX_ARGS):
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise StudioError(f"{name}() takes {want} argument{'s' if hi > 1 else ''}, got {len(node.args)}")
    args = [_build(a, expr, variables) for a in node.args]  # a Starred argument is refused here
    return lambda v: fn(*(a(v) for a in args))
