"""Templating of inject requests (KumoMTA's ``template_dialect``).

A request's templated strings are compiled once (``compile_text``) and rendered once per
recipient (``Text.render``). ``Jinja`` uses Jinja2 in an immutable sandbox: templates come from
API clients, so they must not reach Python internals nor mutate the substitutions shared by
every recipient of the request. HTML bodies are compiled with auto-escaping, like KumoMTA does
for its ``.html`` templates, so a substitution cannot inject markup. ``Static`` leaves the text
as given.

Errors: ``TemplateSyntaxProblem`` at compile time (the request is refused as a whole, HTTP 422);
``RenderProblem`` while rendering for one recipient (that recipient fails).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jinja2 import Template, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

Dialect = Literal["Jinja", "Static"]

_TEXT_ENV = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
_HTML_ENV = ImmutableSandboxedEnvironment(autoescape=True, keep_trailing_newline=True)


class TemplateSyntaxProblem(Exception):
    """A template in the request does not compile; ``field`` names where it came from."""

    def __init__(self, field: str, message: str, line: int | None) -> None:
        where = f" (line {line})" if line else ""
        super().__init__(f"{field}: template syntax error: {message}{where}")
        self.field = field
        self.line = line


class RenderProblem(Exception):
    """Rendering a template for one recipient failed or produced too much text."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Text:
    """One templated string of a request. ``template`` is None for static text."""

    field: str
    source: str
    template: Template | None

    def render(self, context: Mapping[str, Any], max_chars: int) -> str:
        """Render for one recipient; output beyond ``max_chars`` aborts the rendering (a loop
        in a template must not exhaust memory)."""
        if self.template is None:
            return self.source
        chunks: list[str] = []
        size = 0
        try:
            for chunk in self.template.generate(context):
                size += len(chunk)
                if size > max_chars:
                    raise RenderProblem(self.field, f"rendered text exceeds {max_chars} characters")
                chunks.append(chunk)
        except RenderProblem:
            raise
        except Exception as exc:  # any error raised by template code is the template's problem
            raise RenderProblem(self.field, f"template error: {exc}") from exc
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
    return Text(field, source, template)
