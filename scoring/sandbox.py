"""The rule-expression sandbox: a whitelisted subset of Python expressions over a profile.

An expression is parsed with :mod:`ast`, checked node by node against a whitelist (calls only to
``int float str len max min`` and ``.get(...)``; no other attribute, no ``_`` names, no lambdas,
comprehensions, f-strings, walrus, starred or keyword arguments), bounded in size and depth, and then
compiled by CPython with every operation that can build a large value (``+ * ** %``, ``str()``, list/tuple/set
displays) routed through a per-evaluation meter that refuses, before building it, any value beyond a size
bound; since every operation of an expression then works on bounded values, one evaluation is bounded in
time and memory, and no single operation holds the GIL for long. Evaluation runs with empty builtins and the profile as the only namespace, so
a valid expression means exactly what it means in Python.

Why not simpleeval/asteval: their limits are per operand (``4e6 ** 4e6`` passes simpleeval's check), they
allow any attribute that does not start with ``_``, and they interpret the tree on every call; the policy here
is a whitelist checked once, after which CPython evaluates the compiled code (about a microsecond).
"""

from __future__ import annotations

import ast
import copy
import math
import operator
from dataclasses import dataclass, field
from types import CodeType
from typing import Any, Callable, Collection, Mapping, cast

from .errors import EvaluationLimit, RuleCompileError


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one expression may be and may compute."""

    max_chars: int = 2000
    max_nodes: int = 200
    max_depth: int = 32
    max_int_bits: int = 4096  # results of * ** on ints
    max_len: int = 10_000  # units (characters, numbers, container slots) of any value an expression builds
    max_work: int = 50_000  # units all the values one evaluation builds may add up to


#: the only functions an expression may call by name (``.get`` is the only method)
FUNCTIONS: dict[str, Callable[..., Any]] = {"int": int, "float": float, "str": str, "len": len, "max": max, "min": min}

_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
}
#: operators whose result is built by the meter (a method of ``_m``, the evaluation's meter)
_GUARDED: dict[type[ast.operator], str] = {ast.Add: "add", ast.Mult: "mul", ast.Pow: "pow", ast.Mod: "mod"}
_CMPOPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot)
_UNARY = (ast.Not, ast.USub, ast.UAdd)
_CONSTANTS = (bool, int, float, str, type(None))

#: what a refused construct is called in the message
_FORBIDDEN: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.Starred: "starred arguments are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Dict: "dict literals are not allowed",
}


_SEQ = (str, list, tuple)
_CONTAINERS = (list, tuple, set, frozenset, dict)


class _Meter:
    """The guards of one evaluation: every value the expression builds by ``+``, ``*``, ``str()`` or a
    list/tuple/set display is measured before it is built and refused beyond ``limits.max_len`` units.

    A unit is one character, one number (an int per 64 bits) or one container slot, counted through
    shared references: ``[[0] * 9999] * 9999`` is 10**8 units although it takes little memory, because
    comparing it, printing it or testing membership in it walks every one of them (in C, holding the
    GIL). Bounding the size of every value bounds both the memory and the time of each operation, and
    so of the whole expression (at most ``max_nodes`` operations). Sizes of the values built here are
    remembered (by id, holding the value so the id stays unique), so measuring a value built of other
    built values costs one step per direct item; a value read from the profile is walked once, and the
    walk stops as soon as it passes the limit.
    """

    __slots__ = ("limits", "_sizes", "_work")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._sizes: dict[int, tuple[Any, int]] = {}
        self._work = 0

    def size(self, v: Any, budget: int | None = None) -> int:
        """Units of ``v``; stops counting past ``budget`` (default: the limit) and returns what it has."""
        cap = self.limits.max_len if budget is None else budget
        t = type(v)
        if t is str:
            return max(1, len(v))
        if t is int:
            return 1 + v.bit_length() // 64
        if not isinstance(v, _CONTAINERS):
            return 1
        known = self._sizes.get(id(v))
        if known is not None and known[0] is v:
            return known[1]
        items: Any = cast("dict[Any, Any]", v).items() if t is dict else v
        total = 1
        for item in items:
            if t is dict:
                total += self.size(item[0], cap - total) + self.size(item[1], cap - total)
            else:
                total += self.size(item, cap - total)
            if total > cap:
                return total  # not remembered: a partial count
        self._sizes[id(v)] = (v, total)
        return total

    def _remember(self, v: Any, units: int) -> Any:
        if isinstance(v, _CONTAINERS):
            self._sizes[id(v)] = (v, units)
        return v

    def _check(self, units: int, what: str) -> None:
        """Refuse a value of ``units`` before it is built, and charge it to the evaluation's work: an
        expression has no variables, so every value it compares or searches was built (and charged) or read
        from the profile, and the total bounds the time of the whole evaluation."""
        lim = self.limits
        if units > lim.max_len:
            raise EvaluationLimit(f"{what} would build a value of {units} units (limit {lim.max_len})")
        self._work += units
        if self._work > lim.max_work:
            raise EvaluationLimit(f"the expression builds more than {lim.max_work} units of values (limit)")

    def add(self, a: Any, b: Any) -> Any:
        if isinstance(a, _SEQ) and isinstance(b, _SEQ) and type(a) is type(b):
            units = self.size(a) + self.size(b)
            self._check(units, "'+'")
            return self._remember(operator.add(a, b), units)
        return operator.add(a, b)

    def mul(self, a: Any, b: Any) -> Any:
        lim = self.limits
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, _SEQ) and isinstance(n, int):
                one = self.size(seq)
                units = 1 + max(0, n) * (one - 1) if type(seq) is not str else max(1, len(seq) * max(0, n))
                if units > lim.max_len:
                    raise EvaluationLimit(
                        f"'*' would repeat a sequence of {one} units {_short(n)} times (limit {lim.max_len} units)"
                    )
                self._check(units, "'*'")
                return self._remember(seq * n, units)
        if isinstance(a, int) and isinstance(b, int) and abs(a).bit_length() + abs(b).bit_length() > lim.max_int_bits:
            raise EvaluationLimit(f"'*' would make an integer over {lim.max_int_bits} bits")
        return a * b

    def pow(self, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
            # bits of a**b are about b * log2|a|; checked before computing anything
            if b > self.limits.max_int_bits or b * math.log2(abs(a)) > self.limits.max_int_bits:
                raise EvaluationLimit(f"{_short(a)} ** {_short(b)} is too large (limit {self.limits.max_int_bits} bits)")
        return a**b

    def mod(self, a: Any, b: Any) -> Any:
        if isinstance(a, str):
            raise EvaluationLimit("'%' string formatting is not allowed")
        return a % b

    def text(self, v: Any) -> str:
        if type(v) is str:
            return v
        units = self.size(v)
        # the text of a value is at most ~25 characters per unit (a float, an escaped character)
        self._check(units, "str()")
        return str(v)

    def display(self, v: Any) -> Any:
        """A list, tuple or set display whose items are not all constants."""
        units = 1
        for item in v:
            units += self.size(item, self.limits.max_len - units)
            if units > self.limits.max_len:
                break
        self._check(units, "a list/tuple/set display")
        return self._remember(v, units)



def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 20 else text[:17] + "..."


@dataclass(frozen=True, slots=True)
class Expression:
    """A checked, compiled expression; :meth:`evaluate` runs it against a profile."""

    source: str
    names: frozenset[str]
    code: CodeType = field(repr=False)
    globals: dict[str, Any] = field(repr=False)  # never written: an expression cannot assign
    limits: Limits = field(repr=False, default_factory=Limits)
    metered: bool = field(repr=False, default=True)  # False: no operation that can build a large value

    def evaluate(self, namespace: Mapping[str, Any]) -> Any:
        """The value for this profile; raises what Python raises (KeyError, TypeError, ...) or EvaluationLimit."""
        env = {**self.globals, "_m": _Meter(self.limits)} if self.metered else self.globals
        return eval(self.code, env, namespace)  # noqa: S307 - checked whitelist, empty builtins


@dataclass(frozen=True, slots=True)
class _Where:
    """Positions in the user's text of positions in the stripped text the parser saw, as every error
    message gives them: 1-based columns counted in characters (the line too when the text has several)."""

    lines: tuple[str, ...]  # of the stripped text
    line_shift: int  # lines of leading whitespace
    col_shift: int  # leading whitespace on the first parsed line
    multiline: bool

    @classmethod
    def of(cls, source: str) -> "_Where":
        lead = source[: len(source) - len(source.lstrip())]
        return cls(tuple(source.strip().split("\n")), lead.count("\n"), len(lead) - (lead.rfind("\n") + 1),
                   "\n" in source.strip())

    def at(self, lineno: int | None, col: int | None) -> str:
        """`` (at column C)`` for 0-based character column ``col`` of parsed line ``lineno`` (1-based)."""
        if not lineno or col is None or col < 0:
            return ""
        col += self.col_shift if lineno == 1 else 0
        line = f"line {lineno + self.line_shift}, " if self.multiline else ""
        return f" (at {line}column {col + 1})"

    def node(self, node: ast.AST) -> str:
        lineno, offset = getattr(node, "lineno", None), getattr(node, "col_offset", None)
        if not lineno or offset is None or lineno > len(self.lines):
            return ""
        # the parser counts columns in UTF-8 bytes; people count characters
        col = len(self.lines[lineno - 1].encode()[:offset].decode(errors="ignore"))
        return self.at(lineno, col)

    def syntax(self, err: SyntaxError) -> str:
        """Python's own offset is 1-based, in characters, and 0 or None when it does not know (then the end)."""
        lineno = err.lineno or len(self.lines)
        if lineno > len(self.lines):
            return ""
        col = err.offset - 1 if err.offset else len(self.lines[lineno - 1])
        return self.at(lineno, col)


class _Checker(ast.NodeVisitor):
    def __init__(self, fields: Collection[str] | None, limits: Limits, where: _Where) -> None:
        self.fields = fields
        self.limits = limits
        self.where = where
        self.nodes = 0
        self.depth = 0
        self.max_depth = 0
        self.names: set[str] = set()

    def fail(self, node: ast.AST, reason: str) -> None:
        raise RuleCompileError(reason + self.where.node(node))

    def visit(self, node: ast.AST) -> None:
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise RuleCompileError(f"expression too large: more than {self.limits.max_nodes} syntax nodes")
        self.depth += 1
        self.max_depth = max(self.max_depth, self.depth)
        if self.depth > self.limits.max_depth:
            raise RuleCompileError(f"expression nested too deeply (limit {self.limits.max_depth} levels)")
        try:
            super().visit(node)
        finally:
            self.depth -= 1

    def generic_visit(self, node: ast.AST) -> None:
        kind = type(node)
        if kind in _FORBIDDEN:
            self.fail(node, _FORBIDDEN[kind])
        allowed = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.IfExp, ast.Tuple, ast.List, ast.Set,
                   ast.Load, ast.Slice)
        if not isinstance(node, allowed):
            self.fail(node, f"{kind.__name__} is not allowed in a rule expression")
        super().generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if type(node.op) not in _BINOPS:
            self.fail(node, f"operator {type(node.op).__name__} is not allowed; use {' '.join(_BINOPS.values())}")
        if isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            self.fail(node, "'%' string formatting is not allowed")
        self.visit(node.left)
        self.visit(node.right)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if not isinstance(node.op, _UNARY):
            self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        self.visit(node.operand)

    def visit_Compare(self, node: ast.Compare) -> None:
        for op in node.ops:
            if not isinstance(op, _CMPOPS):
                self.fail(node, f"comparison {type(op).__name__} is not allowed")
        self.visit(node.left)
        for c in node.comparators:
            self.visit(c)

    def visit_Constant(self, node: ast.Constant) -> None:
        if not isinstance(node.value, _CONSTANTS):
            self.fail(node, f"constant of type {type(node.value).__name__} is not allowed")

    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name.startswith("_"):
            self.fail(node, f"name {name!r} is not allowed: names starting with '_' are reserved")
        if name in FUNCTIONS:
            self.fail(node, f"{name} can only be called, as {name}(...)")
        if self.fields is not None and name not in self.fields:
            known = ", ".join(sorted(self.fields))
            self.fail(node, f"unknown field {name!r}; profile fields are: {known}")
        self.names.add(name)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.fail(node, f"attribute access .{node.attr} is not allowed (only .get(...) may be called)")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self.visit(node.value)
        self.visit(node.slice)

    def visit_Call(self, node: ast.Call) -> None:
        if node.keywords:
            self.fail(node, "keyword arguments are not allowed")
        func = node.func
        if isinstance(func, ast.Name) and func.id in FUNCTIONS:
            self.nodes += 1
        elif isinstance(func, ast.Attribute) and func.attr == "get":
            if not 1 <= len(node.args) <= 2:
                self.fail(node, ".get takes a key and an optional default")
            self.nodes += 1
            self.visit(func.value)
        else:
            shown = func.id if isinstance(func, ast.Name) else (
                f".{func.attr}" if isinstance(func, ast.Attribute) else type(func).__name__
            )
            allowed = ", ".join(FUNCTIONS) + ", .get"
            self.fail(node, f"call to {shown} is not allowed; allowed calls: {allowed}")
        for arg in node.args:
            self.visit(arg)


class _Guard(ast.NodeTransformer):
    """Route ``+ * ** %`` and displays of computed items through the meter (after checking, so users
    cannot name the guards). A display of constants only is bounded by the syntax node limit."""

    metered = False

    def _call(self, method: str, args: list[ast.expr], like: ast.AST) -> ast.AST:
        self.metered = True
        func = ast.Attribute(value=ast.Name(id="_m", ctx=ast.Load()), attr=method, ctx=ast.Load())
        return ast.copy_location(ast.Call(func=func, args=args, keywords=[]), like)

    def _display(self, node: ast.List | ast.Tuple | ast.Set) -> ast.AST:
        self.generic_visit(node)
        if all(isinstance(e, ast.Constant) for e in node.elts):
            return node
        return self._call("display", [node], node)

    visit_List = visit_Tuple = visit_Set = _display

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == "str":
            return self._call("text", node.args, node)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        guard = _GUARDED.get(type(node.op))
        if guard is None:
            return node
        return self._call(guard, [node.left, node.right], node)


def _constant_subtrees(tree: ast.AST) -> list[ast.expr]:
    """Maximal subexpressions that read no field: evaluated at compile time to refuse e.g. ``9**9**9`` or
    ``[[0] * 9999] * 9999``."""
    out: list[ast.expr] = []

    def reads_field(n: ast.AST) -> bool:
        return any(isinstance(s, ast.Name) and s.id not in FUNCTIONS for s in ast.walk(n))

    def walk(n: ast.AST) -> None:
        if isinstance(n, (ast.BinOp, ast.Call, ast.List, ast.Tuple, ast.Set, ast.Compare)) and not reads_field(n):
            out.append(n)
            return
        for child in ast.iter_child_nodes(n):
            walk(child)

    walk(tree)
    return out


def _syntax_reason(source: str, err: SyntaxError, where: _Where) -> str:
    try:
        stmt = ast.parse(source.strip(), mode="exec").body[0]
    except (SyntaxError, RecursionError, MemoryError, ValueError, IndexError):
        if "nested" in (err.msg or ""):
            return f"expression nested too deeply: {err.msg}"
        return f"syntax error: {err.msg}{where.syntax(err)}"
    kind = {"Import": "import", "ImportFrom": "import", "FunctionDef": "def", "ClassDef": "class",
            "Assign": "assignment", "AugAssign": "assignment"}.get(type(stmt).__name__, type(stmt).__name__)
    return f"{kind} statements are not allowed: a rule is a single expression"


def compile_expression(
    source: str, fields: Collection[str] | None = None, limits: Limits | None = None
) -> Expression:
    """Check and compile ``source``; raises :class:`RuleCompileError` whose reason names the problem.

    ``fields``: the names the expression may read (None: any name not starting with ``_``).
    """
    limits = limits or Limits()
    if not isinstance(source, str):
        raise RuleCompileError(f"an expression must be text, not {type(source).__name__}")
    if not source.strip():
        raise RuleCompileError("the expression is empty")
    if len(source) > limits.max_chars:
        raise RuleCompileError(f"expression too long: {len(source)} characters (limit {limits.max_chars})")
    where = _Where.of(source)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as err:
        raise RuleCompileError(_syntax_reason(source, err, where)) from None
    except (RecursionError, MemoryError):
        raise RuleCompileError(f"expression nested too deeply (limit {limits.max_depth} levels)") from None
    except ValueError as err:  # e.g. NUL characters
        raise RuleCompileError(f"invalid expression: {err}") from None
    checker = _Checker(fields, limits, where)
    checker.visit(tree)
    guard = _Guard()
    guarded = ast.fix_missing_locations(guard.visit(copy.deepcopy(tree)))
    env: dict[str, Any] = {"__builtins__": {}, **FUNCTIONS}
    code = compile(guarded, "<rule>", "eval")
    for sub in _constant_subtrees(tree):
        probe = ast.Expression(_Guard().visit(copy.deepcopy(sub)))
        const_code = compile(ast.fix_missing_locations(probe), "<rule>", "eval")
        try:
            eval(const_code, {**env, "_m": _Meter(limits)}, {})  # noqa: S307 - same checked subset, no fields
        except EvaluationLimit as err:
            raise RuleCompileError(f"{err} (in {ast.unparse(sub)[:60]})") from None
        except Exception:  # noqa: BLE001 - other failures show up per user, like any runtime error
            pass
    return Expression(source=source, names=frozenset(checker.names), code=code, globals=env, limits=limits,
                      metered=guard.metered)
