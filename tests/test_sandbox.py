"""The rule sandbox refuses escapes with a message and otherwise evaluates exactly like Python."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.errors import EvaluationLimit, RuleCompileError
from scoring.sandbox import FUNCTIONS, Limits, compile_expression

PROFILE: dict[str, Any] = {
    "monthly_fee": 128.5,
    "tenure_months": 40,
    "total_events": 17,
    "call_partners": 6,
    "plan_type": "5G畅享套餐",
    "city": "上海市",
    "event_counts": {"call": 5, "app.usage": 7, "app.click": 3},
    "last_event_at": None,
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os", "import statements are not allowed"),
        ("from os import system", "import statements are not allowed"),
        ("__import__('os').system('true')", "call to .system is not allowed"),
        ("__import__('os')", "call to __import__ is not allowed"),
        ("().__class__.__bases__[0].__subclasses__()", "call to .__subclasses__ is not allowed"),
        ("plan_type.__class__", "attribute access .__class__ is not allowed"),
        ("event_counts.get.__self__", "attribute access .__self__ is not allowed"),
        ("__builtins__", "names starting with '_' are reserved"),
        ("_g_pow(2, 3)", "call to _g_pow is not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("(lambda x: x)(1)", "call to Lambda is not allowed"),
        ("[c for c in plan_type]", "comprehensions are not allowed"),
        ("{c: 1 for c in plan_type}", "comprehensions are not allowed"),
        ("sum(x for x in [1, 2])", "call to sum is not allowed"),
        ("max(x for x in [1, 2])", "generator expressions are not allowed"),
        ("open('/etc/passwd')", "call to open is not allowed"),
        ("eval('1')", "call to eval is not allowed"),
        ("plan_type.upper()", "call to .upper is not allowed"),
        ("plan_type.format(x=1)", "keyword arguments are not allowed"),
        ("max(*[1, 2])", "starred arguments are not allowed"),
        ("int('7', base=8)", "keyword arguments are not allowed"),
        ("f'{monthly_fee:>999999999}'", "f-strings are not allowed"),
        ("'%999999999d' % 1", "'%' string formatting is not allowed"),
        ("9**9**9", "too large"),
        ("2 ** 100000 > 0", "too large"),
        ("'a' * 10**9", "would repeat a sequence"),
        ("[0] * 10**8", "would repeat a sequence"),
        ("str(1) * 10**6", "would repeat a sequence"),
        ("-" * 60 + "1", "nested too deeply"),
        ("[" * 40 + "1" + "]" * 40, "nested too deeply"),
        ("(" * 500 + "1" + ")" * 500, "nested too deeply"),
        (" + ".join(["1"] * 150), "nested too deeply"),
        (" and ".join(["monthly_fee > 1"] * 80), "too large"),
        ("x" * 3000, "too long"),
        ("max", "max can only be called"),
        ("unknown_field > 1", "unknown field 'unknown_field'"),
        ("monthly_fee = 3", "assignment statements are not allowed"),
        ("monthly_fee >", "syntax error"),
        ("", "empty"),
        ("1 | 2", "operator BitOr is not allowed"),
        ("b'bytes'", "constant of type bytes is not allowed"),
        ("{'a': 1}", "dict literals are not allowed"),
    ],
)
def test_escape_attempts_are_refused_with_a_message(source: str, expected: str) -> None:
    with pytest.raises(RuleCompileError) as info:
        compile_expression(source, PROFILE.keys())
    assert expected in info.value.reason, info.value.reason


@pytest.mark.parametrize(
    ("source", "profile"),
    [
        ("plan_type * tenure_months > ''", {"plan_type": "x" * 500, "tenure_months": 100}),
        ("tenure_months ** tenure_months > 0", {"tenure_months": 5000}),
        ("monthly_fee * monthly_fee * monthly_fee > 0", {"monthly_fee": 2**3000}),
        ("plan_type + plan_type", {"plan_type": "y" * 6000}),
        ("plan_type % 1", {"plan_type": "%s"}),
    ],
)
def test_cost_bounds_hold_at_evaluation_time(source: str, profile: dict[str, Any]) -> None:
    expr = compile_expression(source)
    with pytest.raises(EvaluationLimit):
        expr.evaluate(profile)


def test_limits_are_configurable() -> None:
    tight = Limits(max_nodes=5)
    with pytest.raises(RuleCompileError, match="more than 5 syntax nodes"):
        compile_expression("monthly_fee > 1 and tenure_months > 2", limits=tight)
    assert compile_expression("monthly_fee > 1", limits=tight).evaluate(PROFILE) is True


def test_runtime_errors_are_python_errors_not_crashes() -> None:
    assert compile_expression("event_counts.get('product.order', 0) == 0").evaluate(PROFILE) is True
    with pytest.raises(KeyError):
        compile_expression("event_counts['product.order'] > 0").evaluate(PROFILE)
    with pytest.raises(ZeroDivisionError):
        compile_expression("monthly_fee / (tenure_months - 40)").evaluate(PROFILE)
    with pytest.raises(AttributeError):  # .get exists only on dicts
        compile_expression("plan_type.get('x')").evaluate(PROFILE)


# ------------------------------------------------------------------ property: same as Python

NUM_FIELDS = ["monthly_fee", "tenure_months", "total_events", "call_partners"]
STR_FIELDS = ["plan_type", "city"]


def _num_leaf() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NUM_FIELDS),
        st.integers(-50, 50).map(str),
        st.sampled_from(["0.5", "2.25", "-1.5", "0.0", "True", "False"]),
    )


def _str_leaf() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(STR_FIELDS), st.sampled_from(["'5G'", "'家庭'", "'套餐'", "''", "'12'", "'ab'"]))


def _extend(children: st.SearchStrategy[tuple[str, str]]) -> st.SearchStrategy[tuple[str, str]]:
    """Typed (kind, source) pairs: numbers stay small (pow only of a leaf, to at most the 3rd power;
    repetition at most twice), so no value nears the cost bounds and both sides must agree exactly."""
    num = children.filter(lambda c: c[0] == "num").map(lambda c: c[1])
    text = children.filter(lambda c: c[0] == "str").map(lambda c: c[1])
    anything = children.map(lambda c: c[1])
    return st.one_of(
        st.tuples(num, st.sampled_from(["+", "-", "*", "/", "//", "%"]), num).map(lambda t: ("num", f"({t[0]} {t[1]} {t[2]})")),
        st.tuples(_num_leaf(), st.integers(0, 3)).map(lambda t: ("num", f"({t[0]} ** {t[1]})")),
        num.map(lambda a: ("num", f"(-{a})")),
        st.tuples(num, num).map(lambda t: ("num", f"max({t[0]}, {t[1]})")),
        st.tuples(num, num, num).map(lambda t: ("num", f"min({t[0]}, {t[1]}, {t[2]})")),
        text.map(lambda s: ("num", f"len({s})")),
        anything.map(lambda s: ("num", f"int({s})")),
        anything.map(lambda s: ("num", f"float({s})")),
        st.tuples(text, num).map(lambda t: ("num", f"event_counts.get({t[0]}, {t[1]})")),
        st.sampled_from(["'call'", "'app.usage'", "'app.click'", "'x'"]).map(
            lambda k: ("num", f"event_counts.get({k}, 0)")
        ),
        st.tuples(text, text).map(lambda t: ("str", f"({t[0]} + {t[1]})")),
        st.tuples(text, st.integers(0, 2)).map(lambda t: ("str", f"({t[0]} * {t[1]})")),
        num.map(lambda a: ("str", f"str({a})")),
        st.tuples(text, st.integers(-3, 3), st.integers(-3, 6)).map(lambda t: ("str", f"{t[0]}[{t[1]}:{t[2]}]")),
        st.tuples(text, st.integers(-2, 2)).map(lambda t: ("str", f"{t[0]}[{t[1]}]")),
        st.tuples(anything, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), anything).map(
            lambda t: ("num", f"({t[0]} {t[1]} {t[2]})")
        ),
        st.tuples(text, st.sampled_from(["in", "not in"]), text).map(lambda t: ("num", f"({t[0]} {t[1]} {t[2]})")),
        st.tuples(anything, st.sampled_from(["and", "or"]), anything).map(lambda t: ("num", f"({t[0]} {t[1]} {t[2]})")),
        anything.map(lambda a: ("num", f"(not {a})")),
        st.tuples(anything, anything, anything).map(lambda t: ("num", f"({t[0]} if {t[1]} else {t[2]})")),
        st.just(("num", "(last_event_at is None)")),
        st.tuples(num, num).map(lambda t: ("num", f"({t[0]} in ({t[1]}, 3, 40))")),
    )


EXPRESSIONS = st.recursive(
    st.one_of(_num_leaf().map(lambda s: ("num", s)), _str_leaf().map(lambda s: ("str", s))),
    _extend,
    max_leaves=12,
).map(lambda c: c[1])


def _outcome(run: Any) -> tuple[str, Any]:
    try:
        value = run()
    except Exception as err:  # noqa: BLE001 - the kind of failure is what is compared
        return ("error", type(err).__name__)
    if isinstance(value, float) and math.isnan(value):
        return ("nan", None)
    return ("value", (type(value).__name__, value))


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=300, deadline=None)
@given(EXPRESSIONS, st.integers(0, 200), st.sampled_from(["5G畅享套餐", "4G基础套餐", "家庭融合套餐", ""]))
def test_valid_expressions_evaluate_exactly_like_python(source: str, tenure: int, plan: str) -> None:
    profile = {**PROFILE, "tenure_months": tenure, "plan_type": plan}
    expr = compile_expression(source, profile.keys())
    reference = {"__builtins__": {}, **FUNCTIONS}
    ours = _outcome(lambda: expr.evaluate(profile))
    theirs = _outcome(lambda: eval(source, dict(reference), dict(profile)))  # noqa: S307 - the reference
    assert ours == theirs, source


@pytest.mark.parametrize(
    ("source", "column"),
    [
        ("monthly_fee >", 14),  # the end of the text: where the missing operand goes
        ("  monthly_fee > ", 16),  # leading blanks count: the column is the user's, not the parser's
        ("monthly_fee > (1", 15),
        ("monthly_fee monthly_fee", 13),
        ("x.y", 1),
        ("   x.y", 4),
        ("plan_type == '畅享套餐' and x.y", 25),  # characters, not UTF-8 bytes
    ],
)
def test_error_positions_are_1_based_columns_of_the_users_text(source: str, column: int) -> None:
    with pytest.raises(RuleCompileError) as info:
        compile_expression(source)
    assert info.value.reason.endswith(f"(at column {column})"), info.value.reason


def test_error_positions_of_a_multi_line_rule_name_the_line() -> None:
    with pytest.raises(RuleCompileError) as info:
        compile_expression("(monthly_fee > 1\n and x.y)")
    assert info.value.reason.endswith("(at line 2, column 6)"), info.value.reason


# ------------------------------------------------------------------ hostile cost: bounded, never frozen

BIG_PROFILE: dict[str, Any] = {**PROFILE, "call_partner_ids": [f"u{i}" for i in range(3000)]}

#: short expressions that, evaluated by plain Python, run for seconds to hours in one C call (nested
#: repetition compared, printed, searched or measured) or take gigabytes
HOSTILE = [
    "[[0] * 9999] * 9999 == [[0] * 9999] * 9999",
    "len(str([[0] * 9999] * 9999)) > 0",
    "[[tenure_months] * 9999] * 9999 == [[tenure_months] * 9999] * 9999",
    "len(str([[[tenure_months] * 99] * 99] * 99)) > 0",
    "tenure_months in [[tenure_months] * 5000] * 5000",
    "max([[monthly_fee] * 9999] * 9999) == 0",
    "str([plan_type] * 9999) == ''",
    "[plan_type * 1000] * 1000 == [plan_type]",
    "[call_partner_ids] * 10 == [call_partner_ids] * 10",
    "len(str((call_partner_ids, call_partner_ids, call_partner_ids, call_partner_ids))) > 0",
    "[str([tenure_months] * 9000)] * 1000 == 0",
    "str([tenure_months] * 9000) + str([tenure_months] * 9000) == ''",
    "(plan_type, city) * 5000 * 5000 == ()",
    "[[event_counts] * 100] * 100 == 0",
    " and ".join(["str([tenure_months] * 9999) != str([tenure_months] * 9998)"] * 8),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_expressions_are_refused_or_stopped_within_bounds(source: str) -> None:
    """Each is refused at compile time (constants) or stopped by the size bound when it runs, with a
    reason naming the bound, and never takes much memory on the way."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises((RuleCompileError, EvaluationLimit)) as info:
            compile_expression(source, BIG_PROFILE.keys()).evaluate(BIG_PROFILE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "limit" in str(info.value)
    assert peak < 20_000_000, f"{source}: {peak} bytes"


def test_constant_hostile_expressions_are_refused_when_compiled() -> None:
    for source in HOSTILE[:2]:
        with pytest.raises(RuleCompileError, match="units"):
            compile_expression(source, PROFILE.keys())


def test_values_under_the_bound_still_evaluate_like_python() -> None:
    """The bound counts shared references, yet leaves room for ordinary use of repetition and str()."""
    profile = {**BIG_PROFILE, "tenure_months": 7}
    for source, expected in [
        ("len([[tenure_months] * 99] * 99)", 99),
        ("[[tenure_months] * 99] * 99 == [[7] * 99] * 99", True),
        ("len(str([tenure_months] * 3000))", len(str([7] * 3000))),
        ("'u1' in call_partner_ids", True),
        ("len(call_partner_ids[:500] + ['x'])", 501),
        ("str(plan_type) * 2 == plan_type + plan_type", True),
    ]:
        assert compile_expression(source, profile.keys()).evaluate(profile) == expected, source
