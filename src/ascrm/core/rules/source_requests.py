"""Compiling one source of `sources:` into its settings and the request it sends for a call."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from ascrm.core.calls.state import CallState
from ascrm.core.lookups.presets import PRESETS
from ascrm.core.lookups.request import Extract, LookupRequest
from ascrm.core.protocol import CallEvent
from ascrm.core.rules.actions import ActionError, Normalize, Template, parse_template
from ascrm.core.rules.excerpt import excerpt
from ascrm.core.rules.sources import (
    KINDS,
    CompiledSource,
    SourceError,
    check_url,
    expand,
    extractor,
    settings_of,
)

_JSON = (("Content-Type", "application/json"),)
_MAX_BODY_PARTS = 1000  # strings in a POST body template


def compile_source(
    name: str,
    spec: Mapping[str, Any],
    maps: Mapping[str, Mapping[str, str]],
    normalize: Normalize | None,
    env: Mapping[str, str] | None = None,
) -> CompiledSource:
    """A source's mapping, compiled; SourceError names the key at fault (never a secret's value)."""
    env = os.environ if env is None else env
    kind = spec.get("kind", "http")
    if kind not in KINDS:
        raise SourceError(("kind",), f"unknown kind {excerpt(kind)} (known: {', '.join(KINDS)})")
    if kind != "http":
        return _preset(name, kind, spec, env)
    for key, why in (("url", "the URL to ask"), ("value", "the dotted path of the value in the JSON answer")):
        if key not in spec:
            raise SourceError((), f"source {excerpt(name)} needs {key}: {why}")
    method = spec.get("method", "GET")
    if "body" in spec and method != "POST":
        raise SourceError(("body",), "a body is sent with method: POST only")
    url_text = expand(spec["url"], ("url",), env)
    check_url(url_text, ("url",))
    url = _template(url_text, ("url",), maps, normalize)
    headers = tuple(_header(key, value, env) for key, value in (spec.get("headers") or {}).items())
    body = _body(spec["body"], ("body",), _BodyContext(maps, normalize, env)) if "body" in spec else None
    if method == "POST":
        headers = (*headers, *_JSON)
    extract = extractor(spec["value"])

    def build(event: CallEvent | None, call: CallState) -> tuple[LookupRequest, Extract] | None:
        rendered = url.render(event, call, _quoted)
        if rendered is None:
            return None
        sent = None
        if body is not None:
            document = body(event, call)
            if document is None:
                return None
            sent = orjson.dumps(document)
        return LookupRequest(method, rendered, headers, sent), extract

    return CompiledSource(name, "http", settings_of(name, spec), build)


def _preset(name: str, kind: str, spec: Mapping[str, Any], env: Mapping[str, str]) -> CompiledSource:
    """A source of a CRM preset: it knows the CRM's request and answer; the caller's number is asked."""
    preset = PRESETS[kind]
    ignored = sorted(set(spec) & {"url", "method", "body", "headers", "value", "webhook", "token", "api_key"})
    ignored = [key for key in ignored if key not in preset.settings]
    if ignored:
        raise SourceError((ignored[0],), f"a {kind} source takes no {ignored[0]} (it knows the CRM's API)")
    config = {key: expand(str(spec[key]), (key,), env) for key in preset.settings if key in spec}
    problem = preset.check(config)
    if problem is not None:
        raise SourceError((), problem)

    def build(event: CallEvent | None, call: CallState) -> tuple[LookupRequest, Extract] | None:
        number = (event.an if event is not None else None) or call.an
        if not number:
            return None
        try:
            return preset.request(config, number), preset.extract(number)
        except ValueError:  # not a phone number the CRM can be asked about
            return None

    return CompiledSource(name, kind, settings_of(name, spec, rate=preset.rate, burst=preset.burst), build)


def _template(text: str, where: tuple[Any, ...], maps: Mapping[str, Mapping[str, str]], normalize: Any) -> Template:
    try:
        return parse_template(text, maps, normalize)
    except ActionError as exc:  # without the text itself: a URL or a body may hold a secret
        raise SourceError(where, exc.message.replace(f" in {excerpt(text)}", "")) from None


def _header(key: Any, value: Any, env: Mapping[str, str]) -> tuple[str, str]:
    text = expand(str(value), ("headers", key), env)
    if any(char in text for char in "\r\n\0"):
        raise SourceError(("headers", key), f"header {excerpt(key)}: a value cannot hold a line break")
    return str(key), text


Body = Callable[[CallEvent | None, CallState], Any]


@dataclass
class _BodyContext:
    maps: Mapping[str, Mapping[str, str]]
    normalize: Normalize | None
    env: Mapping[str, str]
    strings: int = 0


def _body(spec: Any, where: tuple[Any, ...], context: _BodyContext) -> Body:
    """A JSON body template: its strings are templates (rendered as they are; the JSON encoding escapes)."""
    if isinstance(spec, str):
        context.strings += 1
        if context.strings > _MAX_BODY_PARTS:
            raise SourceError(where, f"a body has at most {_MAX_BODY_PARTS} strings")
        template = _template(expand(spec, where, context.env), where, context.maps, context.normalize)
        return template.render
    if isinstance(spec, dict):
        parts = {str(key): _body(value, (*where, key), context) for key, value in spec.items()}

        def mapping(event: CallEvent | None, call: CallState) -> Any:
            out = {}
            for key, part in parts.items():
                value = part(event, call)
                if value is None:
                    return None
                out[key] = value
            return out

        return mapping
    if isinstance(spec, list):
        items = [_body(value, (*where, index), context) for index, value in enumerate(spec)]

        def sequence(event: CallEvent | None, call: CallState) -> Any:
            out = [item(event, call) for item in items]
            return None if any(value is None for value in out) else out

        return sequence
    if spec is None:
        raise SourceError(where, "null in a body: write a value, or leave the key out")
    return lambda event, call: spec  # a number, true, false


def _quoted(value: str) -> str:
    """value percent-encoded for a URL (a number of digits alone, the usual value, is itself)."""
    if value.isdigit() and value.isascii():
        return value
    quoted: str = quote(value, safe="")
    return quoted
