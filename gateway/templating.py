"""Templating of inject requests (KumoMTA's ``template_dialect``).

A request's templated strings are compiled once (``compile_text``) and rendered once per
recipient (``Text.render``). ``Jinja`` uses Jinja2 in an immutable sandbox: templates come from
API clients, so they must not reach Python internals nor mutate the substitutions shared by
every recipient of the request. HTML bodies are compiled with auto-escaping, like KumoMTA does
for its ``.html`` templates, so a substitution cannot inject markup. ``Static`` leaves the text
as given.

Every render has a budget, because one expression can build a huge value long before any
output exists (``{{ [1] * 10**8 }}``, ``{{ "x" * 10**9 }}``, a string doubled in a loop):

* time: ``RENDER_SECONDS`` of wall clock per render. Rendering runs in a worker thread that
  cannot be killed, so the sandbox checks the deadline where template code spends its time:
  every loop iteration, attribute and item lookup, call, filter, operator and output.
* size: an operation whose result would exceed the render's output limit (``max_chars``
  characters, ``MAX_ITEMS`` items for lists, ``MAX_INT_BITS`` bits for integers) is refused
  *before* it runs: ``*``, ``**``, ``+``, ``%``, ``~``, the width/count arguments of string
  methods and filters (``center``, ``ljust``, ``replace``, ``join``, ``format``, ``indent``,
  ``batch``, ``slice``...), ``lipsum``; results of calls are checked after.

Errors: ``TemplateSyntaxProblem`` at compile time (the request is refused as a whole, HTTP 422);
``RenderProblem`` while rendering for one recipient (that recipient fails), with the subclass
``RenderBudgetProblem`` when the budget was exceeded. ``TemplateBudgetProblem`` (a
``TemplateSyntaxProblem``, so also HTTP 422) is for callers that refuse a whole request when a
trial render exceeds the budget (see ``gateway.compose``).
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any, Literal

from jinja2 import Template, TemplateSyntaxError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum

Dialect = Literal["Jinja", "Static"]

RENDER_SECONDS = 0.5  # a real template renders in about a millisecond
MAX_ITEMS = 100_000  # like the sandbox's range() limit
MAX_INT_BITS = 10_000  # Python refuses to print integers of more than 4300 digits anyway
DEFAULT_MAX_CHARS = 20 * 1024 * 1024  # when rendering outside Text.render (compile-time folding)
_LIPSUM_PARAGRAPHS = 100
_LIPSUM_WORDS = 1000
_ITERATE = "petrel iterate"  # a filter name no template can write (it has a space)


class TemplateSyntaxProblem(Exception):
    """A template in the request does not compile; ``field`` names where it came from."""

    def __init__(self, field: str, message: str, line: int | None) -> None:
        where = f" (line {line})" if line else ""
        super().__init__(f"{field}: template syntax error: {message}{where}")
        self.field = field
        self.line = line


class TemplateBudgetProblem(TemplateSyntaxProblem):
    """A template exceeds its rendering budget (refuses the request as a whole, HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        Exception.__init__(self, f"{field}: template exceeds its rendering budget: {message}")
        self.field = field
        self.line = None
        self.detail = message


class RenderProblem(Exception):
    """Rendering a template for one recipient failed or produced too much text."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class RenderBudgetProblem(RenderProblem):
    """Rendering exceeded its time or size budget; ``detail`` says which."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(field, f"template exceeds its rendering budget: {detail}")
        self.detail = detail


class _OverBudget(Exception):
    """Raised inside template code; ``Text.render`` turns it into ``RenderBudgetProblem``."""


@dataclass(frozen=True)
class _Budget:
    deadline: float
    seconds: float
    max_chars: int


_BUDGET: ContextVar[_Budget | None] = ContextVar("petrel_template_budget", default=None)


def _max_chars() -> int:
    budget = _BUDGET.get()
    return budget.max_chars if budget else DEFAULT_MAX_CHARS


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise _OverBudget(f"rendering takes longer than {budget.seconds:g} s")


# --- sizes ------------------------------------------------------------------------------------

def _rendered_size(value: Any, limit: int) -> int:
    """About ``len(str(value))``, computed without building it; stops counting above ``limit``
    (so shared references like ``[big] * 1000`` cost little to measure)."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        total += 1
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, bytes):
            total += 4 * len(item)
        elif isinstance(item, bool) or item is None:
            total += 4
        elif isinstance(item, int):
            total += item.bit_length() // 3
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Mapping):
            total += 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 * len(item)
            stack.extend(item)
        elif isinstance(item, Namespace):
            stack.append(dict(item._Namespace__attrs))
        else:
            total += 64
    return total


def _check_text(size: int, what: str) -> None:
    limit = _max_chars()
    if size > limit:
        raise _OverBudget(f"{what} would be about {size} characters (limit {limit})")


def _check_items(count: int, what: str) -> None:
    if count > MAX_ITEMS:
        raise _OverBudget(f"{what} would have {count} items (limit {MAX_ITEMS})")


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int):
        _check_text(value, what)


def _check_result(value: Any, what: str) -> Any:
    """Refuse a value already built that is too big to go further."""
    if isinstance(value, (str, bytes)):
        _check_text(len(value), what)
    elif isinstance(value, (list, tuple, Mapping, set, frozenset)):
        _check_items(len(value), what)
    return value


def _check_rendered(value: Any, what: str) -> None:
    limit = _max_chars()
    _check_text(_rendered_size(value, limit), what)


# --- operations that can build huge values ------------------------------------------------------

_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?"
    r"[hlL]?(?P<conversion>[diouxXeEfFgGcrsab%])")


def _check_percent_format(template: str, args: Any) -> None:
    """``template % args``: widths, precisions and the arguments' own sizes."""
    limit = _max_chars()
    positional = args if isinstance(args, tuple) else (args,)
    size = len(template)
    index = 0
    for spec in _PERCENT_SPEC.finditer(template):
        if spec["conversion"] == "%":
            continue
        for number in (spec["width"], spec["precision"]):
            if number == "*":
                raise _OverBudget("'*' widths are not allowed in % formatting")
            if number:
                size += int(number)
        if spec["key"] is not None and isinstance(args, Mapping):
            arg = args.get(spec["key"])
        else:
            arg = positional[index] if index < len(positional) else None
            index += 1
        size += _rendered_size(arg, limit)
        _check_text(size, "the formatted text")


def _check_str_format(template: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """``template.format(...)``: nested specs are refused, widths and arguments counted."""
    limit = _max_chars()
    largest = max((_rendered_size(a, limit) for a in (*args, *kwargs.values())), default=0)
    size = 0
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return  # str.format reports the error itself
    for literal, name, spec, _ in fields:
        size += len(literal)
        if name is None:
            continue
        if spec and "{" in spec:
            raise _OverBudget("nested format specifications are not allowed")
        size += largest + sum(int(n) for n in re.findall(r"\d+", spec or ""))
        _check_text(size, "the formatted text")


def _check_replace(text: Any, old: Any, new: Any, count: Any) -> None:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    _check_text(len(text) + hits * (len(new) - len(old)), "the replaced text")


def _check_join(separator: Any, items: list[Any]) -> None:
    limit = _max_chars()
    _check_items(len(items), "the joined list")
    size = _rendered_size(separator, limit) * max(len(items) - 1, 0)
    for item in items:
        _check_text(size, "the joined text")
        size += _rendered_size(item, limit)
    _check_text(size, "the joined text")


def _bounded_list(value: Any) -> list[Any]:
    items: list[Any] = []
    for item in value:
        _tick()
        items.append(item)
        _check_items(len(items), "the list")
    return items


def _check_binop(operator: str, left: Any, right: Any) -> None:
    sequences = (str, bytes, list, tuple)
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, sequences) and isinstance(times, int):
                _check_length(seq, len(seq) * max(times, 0), "the repeated value")
                return
        if isinstance(left, int) and isinstance(right, int):
            _check_bits(left.bit_length() + right.bit_length())
    elif operator == "**":
        if (isinstance(left, int) and isinstance(right, int) and right > 0
                and abs(left) > 1):
            _check_bits(left.bit_length() * right)
    elif operator == "+":
        if isinstance(left, sequences) and isinstance(right, sequences):
            _check_length(left, len(left) + len(right), "the sum")
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left, right)


def _check_length(kind: Any, length: int, what: str) -> None:
    if isinstance(kind, (str, bytes)):
        _check_text(length, what)
    else:
        _check_items(length, what)


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise _OverBudget(f"the integer would have about {bits} bits (limit {MAX_INT_BITS})")


_STR_WIDTH_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})


def _check_method_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Pre-checks for the str/bytes methods that can amplify; returns the args to call with."""
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
    owner = getattr(target, "__self__", None)
    if not isinstance(owner, (str, bytes)):
        return args
    name = getattr(target, "__name__", "")
    if name in _STR_WIDTH_METHODS and args:
        _check_width(args[0], f"the result of {name}()")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            _check_text(len(owner) + tabs * max(size, 0), "the result of expandtabs()")
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count"))
    elif name == "join" and len(args) == 1:
        items = _bounded_list(args[0])
        _check_join(owner, items)
        return (items,)
    elif name == "format" and isinstance(owner, str):
        _check_str_format(owner, args, kwargs)
    elif name == "format_map" and isinstance(owner, str) and args and isinstance(args[0], Mapping):
        _check_str_format(owner, (), args[0])
    return args


def _filter_checks(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Pre-checks for the built-in filters that can amplify; ``args`` start with the value."""

    def arg(index: int, key: str, default: Any = None) -> Any:
        return args[index] if len(args) > index else kwargs.get(key, default)

    value = arg(0, "value")
    if name == "center":
        _check_width(arg(1, "width", 80), "the centered text")
    elif name == "indent":
        width = arg(1, "width", 4)
        lines = value.count("\n") + 1 if isinstance(value, str) else 1
        per_line = width if isinstance(width, int) else len(str(width))
        _check_text(len(str(value)) + lines * max(per_line, 0), "the indented text")
    elif name == "format" and isinstance(value, str):
        _check_percent_format(value, kwargs or tuple(args[1:]))
    elif name == "replace":
        _check_replace(value, arg(1, "old"), arg(2, "new"), arg(3, "count"))
    elif name == "join" and value is not None and not isinstance(value, str):
        items = _bounded_list(value)
        _check_join(arg(1, "d", ""), items)
        return (items, *args[1:])
    elif name in ("batch", "slice"):
        count = arg(1, "linecount" if name == "batch" else "slices")
        if isinstance(count, int):
            _check_items(count, f"the {name}")
    elif name == "sum":
        start = arg(2, "start", 0)
        if not isinstance(start, (int, float)):
            raise _OverBudget("sum only adds numbers in templates")
    return args


def _guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    passes_argument = hasattr(function, "jinja_pass_arg")

    @wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        head, rest = (args[:1], args[1:]) if passes_argument else ((), args)
        rest = _filter_checks(name, rest, kwargs)
        return _check_result(function(*head, *rest, **kwargs), f"the result of |{name}")

    return guarded


def _iterate(value: Iterable[Any]) -> Iterator[Any]:
    """What every ``{% for %}`` loops over: the deadline is checked at each iteration."""
    for item in value:
        _tick()
        yield item


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if not (isinstance(n, int) and isinstance(min, int) and isinstance(max, int)):
        raise TypeError("lipsum() takes integers")
    if n > _LIPSUM_PARAGRAPHS or max > _LIPSUM_WORDS or min > _LIPSUM_WORDS:
        raise _OverBudget(f"lipsum() is limited to {_LIPSUM_PARAGRAPHS} paragraphs of "
                          f"{_LIPSUM_WORDS} words")
    return generate_lorem_ipsum(n, html, min, max)


def _finalize(value: Any) -> Any:
    _tick()
    if not isinstance(value, str):  # str output is counted by Text.render as it streams
        _check_rendered(value, "the printed value")
    return value


class _BudgetCodeGenerator(CodeGenerator):
    """Routes ``~`` through ``environment.budget_concat`` (Jinja joins it in one C call)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.budget_concat({join}, (")
        for operand in node.nodes:
            self.visit(operand, frame)
            self.write(", ")
        self.write("))")


class _BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the rendering budget of this module's docstring."""

    code_generator_class = _BudgetCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape, keep_trailing_newline=True, finalize=_finalize)
        self.filters = {name: _guard_filter(name, function)
                        for name, function in self.filters.items()}
        self.filters[_ITERATE] = _iterate
        self.globals["lipsum"] = _lipsum

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _ITERATE, [], [], None, None,
                                     lineno=loop.iter.lineno)
        return tree

    def budget_concat(self, join: Callable[[Iterable[Any]], str], operands: tuple[Any, ...]) -> str:
        _tick()
        _check_rendered(operands, "the concatenated text")
        return join(operands)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        args = _check_method_call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_result(result, "the result of a call")


_TEXT_ENV = _BudgetedEnvironment(autoescape=False)
_HTML_ENV = _BudgetedEnvironment(autoescape=True)


@dataclass(frozen=True)
class Text:
    """One templated string of a request. ``template`` is None for static text."""

    field: str
    source: str
    template: Template | None

    def render(self, context: Mapping[str, Any], max_chars: int,
               seconds: float = RENDER_SECONDS) -> str:
        """Render for one recipient within the budget: ``seconds`` of wall clock and
        ``max_chars`` characters of output, intermediate values included (see the module
        docstring). ``RenderBudgetProblem`` when either is exceeded."""
        if self.template is None:
            return self.source
        chunks: list[str] = []
        size = 0
        token = _BUDGET.set(_Budget(time.monotonic() + seconds, seconds, max_chars))
        try:
            for chunk in self.template.generate(context):
                size += len(chunk)
                if size > max_chars:
                    raise RenderProblem(self.field, f"rendered text exceeds {max_chars} characters")
                chunks.append(chunk)
        except RenderProblem:
            raise
        except _OverBudget as exc:
            raise RenderBudgetProblem(self.field, str(exc)) from exc
        except MemoryError as exc:
            raise RenderBudgetProblem(self.field, "out of memory") from exc
        except Exception as exc:  # any error raised by template code is the template's problem
            raise RenderProblem(self.field, f"template error: {exc}") from exc
        finally:
            _BUDGET.reset(token)
        return "".join(chunks)


def compile_text(field: str, source: str, dialect: Dialect, *, html: bool = False) -> Text:
    """Compile ``source`` (named ``field`` in errors) for ``dialect``."""
    if dialect == "Static":
        return Text(field, source, None)
    env = _HTML_ENV if html else _TEXT_ENV
    try:
        template = env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateSyntaxProblem(field, exc.message or "invalid syntax", exc.lineno) from exc
    except _OverBudget as exc:  # constant folding ran a refused operation at compile time
        raise TemplateBudgetProblem(field, str(exc)) from exc
    return Text(field, source, template)
