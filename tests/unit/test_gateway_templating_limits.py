"""The rendering budget of inject templates: expressions that would build huge values or run
for long are refused quickly (per recipient, and as a whole request when the first recipient's
render exceeds it), while ordinary templates render as before.

Timing: each refusal is asserted on its message; the elapsed-time bound is only a guard, far
above the expected few milliseconds (or the 0.5 s deadline for pure loops).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.compose import ComposeError, Composer
from gateway.models import InjectV1Request
from gateway.templating import (
    RENDER_SECONDS,
    RenderBudgetProblem,
    RenderProblem,
    TemplateSyntaxProblem,
    compile_text,
)

LIMIT = 1_000_000
GUARD_SECONDS = RENDER_SECONDS + 2.5

NAMESPACE_DOUBLING = ('{% set ns = namespace(s="x") %}{% for i in range(64) %}'
                      '{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}')

SIZE_ATTACKS = {
    "list repetition": "{{ [1] * 100000000 }}",
    "string repetition": '{{ "x" * 10**8 }}',
    "lipsum": "{{ lipsum(10**8) }}",
    "integer power": "{{ 2 ** (10**9) }}",
    "namespace doubling with ~": NAMESPACE_DOUBLING,
    "namespace doubling with +": ('{% set ns = namespace(s="x") %}{% for i in range(64) %}'
                                  "{% set ns.s = ns.s + ns.s %}{% endfor %}"),
    "list doubling": ("{% set ns = namespace(s=[1]) %}{% for i in range(64) %}"
                      "{% set ns.s = ns.s + ns.s %}{% endfor %}"),
    "str.ljust width": '{{ "".ljust(10**9) }}',
    "center filter width": '{{ "x"|center(10**9) }}',
    "str.replace amplification": '{{ ("x" * 10**5).replace("", "y" * 10**5) }}',
    "replace filter amplification": '{{ ("x" * 10**5)|replace("", "y" * 10**5) }}',
    "str.join amplification": '{{ ("y" * 10**5).join("x" * 10**5) }}',
    "join filter of shared values": '{{ (["x" * 10**5] * 1000)|join }}',
    "printing shared values": '{{ ["y" * 10**5] * 1000 }}',
    "% width": '{{ "%0999999999d" % 1 }}',
    "format filter width": '{{ "%0999999999d"|format(1) }}',
    "str.format width": '{{ "{:>999999999}".format(1) }}',
    "expandtabs": '{{ ("\t" * 10**5).expandtabs(10**5) }}',
    "batch padding": "{{ [1]|batch(10**9, 0)|list }}",
    "sum of lists": "{{ [[1]] * 1000|sum(start=[]) }}",
}

TIME_ATTACKS = {
    "deep loop": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "loop over a string": ('{% set s = "x" * 100000 %}'
                           "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}"),
    "exponential macro": ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
                          "{% endmacro %}{{ f(40) }}"),
}


def render(source: str, context: dict[str, Any] | None = None, *, html: bool = False) -> str:
    return compile_text("content.text_body", source, "Jinja", html=html).render(
        context or {}, LIMIT)


def refused(source: str) -> RenderBudgetProblem:
    started = time.monotonic()
    with pytest.raises(RenderBudgetProblem) as error:
        render(source)
    assert time.monotonic() - started < GUARD_SECONDS
    assert error.value.field == "content.text_body"
    assert str(error.value).startswith("content.text_body: template exceeds its rendering budget")
    return error.value


@pytest.mark.parametrize("source", SIZE_ATTACKS.values(), ids=SIZE_ATTACKS.keys())
def test_values_over_the_size_budget_are_refused_before_being_built(source: str) -> None:
    problem = refused(source)
    assert "rendering takes longer" not in problem.detail  # refused by size, not by the clock


@pytest.mark.parametrize("source", TIME_ATTACKS.values(), ids=TIME_ATTACKS.keys())
def test_long_renders_stop_at_the_deadline(source: str) -> None:
    assert "rendering takes longer than" in refused(source).detail


def test_budget_problem_is_a_render_problem() -> None:
    with pytest.raises(RenderProblem):
        render('{{ "x" * 10**8 }}')


def test_ordinary_templates_still_render() -> None:
    ctx = {"name": "Ann", "items": ["a", "b", "c"], "price": 1.5, "n": 3}
    assert render("Hi {{ name }}!\n", ctx) == "Hi Ann!\n"
    assert render("{% for x in items %}{{ loop.index }}:{{ x|upper }} {% endfor %}", ctx) == \
        "1:A 2:B 3:C "
    assert render("{{ items|join(', ') }}|{{ items|length }}|{{ price * n }}", ctx) == \
        "a, b, c|3|4.5"
    assert render('{{ "%s-%05d"|format(name, 42) }} {{ "{}!".format(name) }} '
                  '{{ name ~ "!" }} {{ "-" * 5 }} {{ 2 ** 10 }} {{ [1, 2] * 2 }}', ctx) == \
        "Ann-00042 Ann! Ann! ----- 1024 [1, 2, 1, 2]"
    assert render('{{ name|center(9) }}|{{ "a\tb".expandtabs(4) }}|{{ (items + items)|length }}',
                  ctx) == "   Ann   |a   b|6"
    assert render("{% for i in range(1000) %}{% endfor %}{{ lipsum(2, html=False)|length > 0 }}") \
        == "True"
    assert render("<p>{{ a ~ b }}</p>", {"a": "<b>", "b": "&"}, html=True) == \
        "<p>&lt;b&gt;&amp;</p>"


def test_values_up_to_the_limit_are_allowed() -> None:
    assert len(render('{{ "x" * 1000000 }}')) == LIMIT
    assert render(NAMESPACE_DOUBLING.replace("64", "19")) == str(2 ** 19)


def request(text_body: str, recipients: list[dict[str, Any]]) -> InjectV1Request:
    return InjectV1Request.model_validate({
        "envelope_sender": "sender@example.com", "recipients": recipients,
        "content": {"subject": "hi", "text_body": text_body}})


def test_composer_refuses_the_request_when_the_first_render_is_over_budget() -> None:
    started = time.monotonic()
    with pytest.raises(TemplateSyntaxProblem) as error:  # what the API maps to 422
        Composer(request('{{ "x" * 10**8 }}', [{"email": "ann@example.org"}]), LIMIT)
    assert time.monotonic() - started < GUARD_SECONDS
    assert error.value.field == "content.text_body"
    assert error.value.line is None
    assert "rendering budget" in str(error.value)
    assert "syntax" not in str(error.value)


def test_over_budget_with_one_recipients_substitutions_fails_only_that_recipient() -> None:
    composer = Composer(request("{{ 'x' * n }}", [
        {"email": "ann@example.org", "substitutions": {"n": 3}},
        {"email": "bob@example.org", "substitutions": {"n": 10**9}}]), LIMIT)
    assert b"xxx" in composer.compose(0).content
    with pytest.raises(ComposeError, match="rendering budget"):
        composer.compose(1)


def test_first_recipients_ordinary_failure_is_still_reported_by_compose() -> None:
    composer = Composer(request("{{ 1 // n }}", [
        {"email": "ann@example.org", "substitutions": {"n": 0}},
        {"email": "bob@example.org", "substitutions": {"n": 1}}]), LIMIT)
    with pytest.raises(ComposeError, match="division"):
        composer.compose(0)
    assert composer.compose(1).recipient == "bob@example.org"
