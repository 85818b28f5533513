"""Third-party browser assets made safe to serve offline.

The panel loads plotly.js from ``static/vendor/``. Its bundles carry absolute URLs: a logo
link, the "edit in Chart Studio" endpoint, a topojson CDN default, attribution and
documentation links. None is fetched by the charts the panel draws (scatter and bar, with
``displaylogo: false``), but a served asset should not be able to reach the internet at all,
so ``offline_bundle`` removes the scheme from every absolute URL except the XML namespace
identifiers, which are names compared as strings, never fetched. The result is what
``static/vendor/plotly-basic.min.js`` holds (``manage.py vendor_plotly SOURCE``).
"""

from __future__ import annotations

import re

# XML namespace URIs (createElementNS and friends): identifiers, not locations.
NAMESPACES = (
    "http://www.w3.org/1999/xhtml", "http://www.w3.org/1999/xlink", "http://www.w3.org/2000/svg",
    "http://www.w3.org/2000/xmlns/", "http://www.w3.org/XML/1998/namespace",
)
_NAMESPACE = re.compile("|".join(re.escape(ns) for ns in NAMESPACES))
_NAMESPACE_OR_SCHEME = re.compile(f"({_NAMESPACE.pattern})|https?://")


def absolute_urls(text: str) -> list[str]:
    """Every absolute http(s) URL in ``text`` that is not an XML namespace identifier."""
    found = re.findall(r"https?://[^\s\"'`)<>\\]+", _NAMESPACE.sub("", text))
    return sorted(set(found))


def offline_bundle(text: str) -> str:
    """``text`` with every absolute URL made host-relative text (namespace identifiers kept)."""
    # At each position a namespace identifier, if one starts there, wins over a bare scheme.
    return _NAMESPACE_OR_SCHEME.sub(lambda m: m.group(1) or "", text)
