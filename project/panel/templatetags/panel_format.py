"""The panel's number filters (``{% load panel_format %}``): a gain or a relative change is always
written by ``improvement.formatting.signed_percent`` — the formatter the decision text uses — and
coloured by the metric's direction (``higher`` is better for a score or a gain, ``lower`` for a
latency or a size).

    {{ run.gain|signed_pct }}                   +3.6 %
    {{ change|signed_change:"lower" }}          <span class="delta bad" title="worse">+688.0 %</span>
    {{ run.decision|decision_reason:"promoted" }}   the decision without its "promoted: " prefix
"""

from __future__ import annotations

import math

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from improvement.formatting import fixed, signed_percent

register = template.Library()

HIGHER = "higher"
LOWER = "lower"
DIGITS = 1


def _number(value) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@register.filter
def signed_pct(value, digits: int = DIGITS) -> str:
    """A fraction as a signed percentage: ``0.036`` → ``+3.6 %``; nothing → ``—``."""
    return signed_percent(_number(value), digits=int(digits))


@register.filter
def change_class(value, better: str = HIGHER) -> str:
    """``good``, ``bad`` or ``flat`` for a change (a fraction) of a metric whose ``better`` direction is
    ``higher`` or ``lower``; ``flat`` also for a metric with no direction; ``""`` when there is no value."""
    number = _number(value)
    if number is None:
        return ""
    if better not in (HIGHER, LOWER) or round(number * 100.0, DIGITS) == 0:
        return "flat"
    return "good" if (number > 0) == (better == HIGHER) else "bad"


@register.filter
def signed_change(value, better: str = HIGHER) -> SafeString | str:
    """The signed percentage in a span coloured (and titled) by whether it is better or worse."""
    text = signed_pct(value)
    css = change_class(value, better)
    if not css:
        return text
    title = {"good": "better", "bad": "worse", "flat": "no change"}[css]
    return format_html('<span class="delta {}" title="{}">{}</span>', css, title, text)


@register.filter
def digits(value, count: int = 4) -> str:
    """A measurement with ``count`` decimals (``0.8571428571428571`` → ``0.8571``); nothing → ``—``."""
    return fixed(_number(value), digits=int(count))


@register.filter
def decision_reason(decision, status: str = "") -> str:
    """A run's decision text without the leading status the page already shows in bold.

    Decisions are written ``"promoted: gain +3.6 % ..."`` or ``"cancelled by an operator"``; the page
    reads "**Promoted**: gain +3.6 % ..." rather than "Promoted: promoted: ...".
    """
    text = str(decision or "")
    status = str(status or "").strip().lower()
    if status and text.lower().startswith(status):
        rest = text[len(status):]
        if rest[:1] in (":", " ") or not rest:
            return rest.lstrip(": ").strip()
    return text
