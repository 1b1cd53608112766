"""The report page's HTML: Jinja2 templates (``templates/``) with the page's CSS and its
JavaScript (``static/``) as package files, and the Vega libraries inlined, so the page opens
offline.

Every value a template writes is escaped as `html.escape` escapes it (quotes included), unless
it is `markupsafe.Markup`: the HTML the templates' macros make, and the JSON and JavaScript
made safe inside a ``<script>`` element here.
"""

from __future__ import annotations

import contextlib
import datetime
import html
import json
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from ltcli.core import atomic, paths
from ltcli.results.page.charts import vega_lite_version

PACKAGE = "ltcli.results.page"


def _escaped(value: Any) -> Markup:
    """`value` as HTML text, escaped as `html.escape` does (Markup left as it is)."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


@cache
def environment() -> jinja2.Environment:
    """The templates of ``templates/``, every value escaped (`_escaped`)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader(PACKAGE, "templates"),
        autoescape=True,
        finalize=_escaped,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def parts() -> Any:
    """The macros of ``templates/parts.html.j2`` (each returns Markup)."""
    return environment().get_template("parts.html.j2").module


@cache
def static(name: str) -> str:
    """The text of the package file ``static/NAME``."""
    return resources.files(PACKAGE).joinpath("static", name).read_text(encoding="utf-8")


@cache
def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed (with vega-tooltip) as one script that sets
    ``window.vegaEmbed``: vl-convert's bundle for altair's Vega-Lite version, cached in lt's
    cache folder (building it takes seconds)."""
    import vl_convert

    version = vega_lite_version()
    if version not in vl_convert.get_vegalite_versions():
        version = None  # vl-convert's newest; altair's specs are meant to read there too
    name = f"vl-convert-{vl_convert.__version__}-vl{version or 'latest'}.js"
    cached = paths.cache_dir() / "report" / name
    try:
        return cached.read_text(encoding="utf-8")
    except OSError:
        pass
    bundle = vl_convert.javascript_bundle(vl_version=version)
    with contextlib.suppress(OSError):  # a read-only cache folder costs seconds, no more
        atomic.write_bytes(cached, bundle.encode("utf-8"))
    return bundle


def json_script(value: Any) -> Markup:
    """`value` as JSON safe inside a ``<script>`` element."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def safe_js(code: str) -> Markup:
    """`code` safe inside a ``<script>`` element (no ``</script`` ends it early)."""
    return Markup(code.replace("</script", "<\\/script"))


def document(
    labels: str,
    runs: int,
    sections: list[tuple[str, str, Markup]],
    data: dict[str, Any],
    charts: list[dict[str, Any]],
) -> str:
    """The whole page (``templates/report.html.j2``): the `sections` (anchor, title, body)
    with a link to each, the charts' `data` and specs as JSON, the libraries, the CSS and the
    script that draws `charts`."""
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            labels=labels,
            runs=runs,
            stamp=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            sections=sections,
            data=json_script(data),
            charts=json_script(charts),
            bundle=safe_js(javascript_bundle()),
            css=Markup(static("report.css")),  # package files: lt's own CSS and script
            js=Markup(static("report.js")),
        )
    )
