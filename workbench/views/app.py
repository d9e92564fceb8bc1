"""The dashboard's shell: one template, one page per question, chosen in the sidebar.

A page is a ``pn.viewable.Viewer`` built as ``Page(store=..., notify=...)`` with two layouts,
``controls`` (the sidebar) and ``main``, and a ``reload()`` that re-reads the store. Pages are
built the first time they are shown (a session that only looks at the Pareto page never pays
for the others). A page that changes the store (the sweep, an import) calls ``notify()``; the
shell then reloads every other built page when it is next shown. The page is in the URL
(``?page=tensors``), so a view can be bookmarked and shared; an unknown or empty ``?page=``
opens the Pareto page.

Offline: every resource comes from the app's own server (`panel serve` serves Panel's and
Bokeh's bundled files). Panel's Fast design also asks fonts.googleapis.com for Open Sans on
every page, which an air-gapped lab refuses; ``LocalFast`` is that design without the web font
(the pages use Open Sans where it is installed, else the system's sans-serif).

Lighter pages: Panel sends Bokeh's MathJax bundle (bokeh-mathjax.min.js, 1.8 MB, 28 % of the
page's JavaScript) to every page that holds a Markdown or HTML pane, in case its text holds TeX.
No text of the workbench does, so ``without_mathjax`` leaves it out unless a Bokeh model itself
asks for it (a TeX axis label, a MathText glyph): one session alone then parses 4.5 MB of
script instead of 6.3 MB (``docs/bench-sessions.md``).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import panel as pn
from panel.io.resources import CDN_DIST
from panel.theme.fast import Fast

from workbench import store as st

log = logging.getLogger(__name__)

TITLE = "Hyper-Quantization Workbench"
DEFAULT_PAGE = "pareto"


class LocalFast(Fast):
    """Panel's Fast design less its web font (``Fast._resources["font"]``, Open Sans from
    fonts.googleapis.com), so a page makes no request that leaves the machine."""

    _resources = {
        **{kind: res for kind, res in Fast._resources.items() if kind != "font"},
        # Fast names its own module relative to the class ("fast/js/..."); spelled out so the
        # subclass resolves to the same bundled file that panel serves.
        "js_modules": {**Fast._resources["js_modules"],
                       "fast-design": f"{CDN_DIST}bundled/fast/js/fast_design.js"},
    }


def without_mathjax() -> None:
    """Panel's page bundle leaves out bokeh-mathjax unless a Bokeh model needs it (Bokeh's own
    test, ``bokeh.embed.bundle._use_mathjax``); Panel's extra rule, 'any Markdown/HTML pane',
    is switched off. Panel's ``bundle_resources`` looks the rule up in its module at each page,
    so replacing it there is enough; a Panel without it is left as it is (the served page's
    scripts are tested: tests/ui/test_offline_ui.py)."""
    import panel.io.resources as resources
    if callable(getattr(resources, "_panel_use_mathjax", None)):
        resources._panel_use_mathjax = lambda roots: False


@dataclass(frozen=True)
class PageEntry:
    slug: str       # in the URL: ?page=<slug>
    title: str      # in the sidebar
    question: str   # the page's heading: the question it answers
    target: str     # "module:Class", imported when the page is first shown


PAGES = (
    PageEntry("pareto", "Pareto", "Which format gives the lowest error for the bits I can afford?",
              "workbench.views.pareto_page:ParetoPage"),
    PageEntry("fp8", "fp8 vs fp16 scales", "Do fp8 scales on half-size blocks beat fp16 scales at the same bits?",
              "workbench.views.fp8_page:Fp8Page"),
    PageEntry("tensors", "Tensors", "Which tensors are hard to quantize, and why?",
              "workbench.views.tensors_page:TensorsPage"),
    PageEntry("throughput", "Throughput", "How fast does each format quantize and dequantize?",
              "workbench.views.throughput_page:ThroughputPage"),
    PageEntry("truth", "Truth", "Which weight metric predicts what a format does to the model's outputs?",
              "workbench.views.truth_page:TruthPage"),
    PageEntry("sweep", "Sweep", "Measure a model: run a sweep and watch results land",
              "workbench.views.sweep_page:SweepPage"),
    PageEntry("data", "Data", "Runs, provenance and sharing: import and export Parquet",
              "workbench.views.data_page:DataPage"),
)
BY_SLUG = {p.slug: p for p in PAGES}


def expire_on_close() -> None:
    """On load (``pn.state.onload``, once the browser is connected): when this session's last
    connection closes, ask bokeh to discard it at its next sweep (every ~17 s). The server keeps
    *unconnected* sessions for ``--unused-session-lifetime`` (10 minutes, ``browser.SERVE_ARGS``)
    so that a browser connecting late on a loaded machine finds the page it was served; bokeh
    applies the same lifetime to sessions whose browser has left, which would hold twenty
    users' documents in memory for 10 minutes. Bokeh's ServerSession has no hook for this, so
    its ``unsubscribe`` is wrapped on this one instance."""
    ctx = getattr(pn.state.curdoc, "session_context", None)
    session = getattr(ctx, "_session", None)
    if session is None or not callable(getattr(session, "unsubscribe", None)) \
            or not callable(getattr(session, "request_expiration", None)):
        return      # not served by a bokeh server (a notebook, a test's get_root)
    unsubscribe = session.unsubscribe

    def _unsubscribe(connection) -> None:
        unsubscribe(connection)
        if session.connection_count == 0:
            session.request_expiration()
    session.unsubscribe = _unsubscribe


class ClosedSocketWrites(logging.Filter):
    """Turns asyncio's "Task exception was never retrieved" for a write to a websocket whose
    browser had already gone (tornado's ``WebSocketClosedError`` / ``StreamClosedError``: a
    patch sent as a tab closes) into one INFO line without the traceback; every other record
    passes unchanged. Nothing was lost: the session it was for is being discarded."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ in ("WebSocketClosedError", "StreamClosedError") \
                and type(exc).__module__.startswith("tornado."):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "a write to a websocket whose browser had closed was dropped", (), None, None)
        return True


def quiet_closed_socket_writes() -> None:
    """Install :class:`ClosedSocketWrites` on the asyncio logger, once per process."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, ClosedSocketWrites) for f in logger.filters):
        logger.addFilter(ClosedSocketWrites())


def tolerate_detached_close() -> None:
    """Bokeh's own race, closed once per process: its keep-alive job pings every connection, and a
    ping on a socket whose browser has just gone raises ``WebSocketClosedError``, so bokeh calls
    ``client_lost``, which detaches the connection's session. Tornado then calls the handler's
    ``on_close``, which reads ``connection.session``, whose ``assert self._session is not None``
    fails: an ERROR with a traceback in the server log for a tab that simply closed (two in a
    20-session benchmark as the contexts closed together). For a connection bokeh has already
    detached, ``on_close`` now logs the close at INFO and only drops the connection again (bokeh's
    ``client_lost`` is idempotent); every other close runs bokeh's own ``on_close`` unchanged.
    Nothing is lost: the detach already unsubscribed the connection, which is what asks for the
    session's expiry (``expire_on_close``)."""
    from bokeh.server.views import ws
    original = ws.WSHandler.on_close
    if getattr(original, "_workbench_detached_guard", False):
        return

    def on_close(self) -> None:
        connection = getattr(self, "connection", None)
        # "_session" is bokeh's private slot; a bokeh without it gets its own on_close, unchanged.
        if connection is not None and getattr(connection, "_session", "absent") is None:
            log.info("websocket closed (code=%s) after bokeh's keep-alive had dropped its session",
                     getattr(self, "close_code", None))
            self.application.client_lost(connection)
            return
        original(self)

    on_close._workbench_detached_guard = True
    ws.WSHandler.on_close = on_close


def release_memory(session_context) -> None:
    """When a browser session closes (``pn.state.on_session_destroyed``): collect the cycles its
    pages leave (HoloViews streams, Bokeh models) and hand the freed heap back to the system
    (glibc's malloc_trim), so a server that served twenty users returns to its idle size."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc: the memory stays reusable by this process
        pass
    log.info("session %s discarded; memory released", getattr(session_context, "id", "?"))


def page_class(entry: PageEntry) -> type:
    module, _, name = entry.target.partition(":")
    return getattr(importlib.import_module(module), name)


class Workbench:
    """One browser session's dashboard: the template, the page selector, the built pages."""

    def __init__(self, store: str | Path | None = None, page: str = "pareto"):
        self.store = Path(store) if store else st.default_store()
        self.pages: dict[str, pn.viewable.Viewer] = {}
        self._stale: set[str] = set()
        self.nav = pn.widgets.RadioBoxGroup(options={p.title: p.slug for p in PAGES},
                                            value=page if page in BY_SLUG else DEFAULT_PAGE,
                                            inline=False, name="Page")
        self.heading = pn.pane.Markdown("", margin=(0, 10))
        self.controls = pn.Column(sizing_mode="stretch_width")
        self.main = pn.Column(sizing_mode="stretch_width")
        self.damaged = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width")
        self.nav.param.watch(self._show, "value")
        self._show()

    def page(self, slug: str) -> pn.viewable.Viewer:
        """The page for ``slug``, built on first use (reloaded if the store changed since)."""
        if slug not in self.pages:
            self.pages[slug] = page_class(BY_SLUG[slug])(store=self.store, notify=lambda s=slug: self._changed(s))
        elif slug in self._stale:
            self.pages[slug].reload()
        self._stale.discard(slug)
        return self.pages[slug]

    def _changed(self, source: str):
        """The store changed (a sweep or an import on page ``source``): the others reload when shown."""
        self._stale |= set(self.pages) - {source}

    def _show(self, *_):
        if self.nav.value not in BY_SLUG:
            # ?page=bogus, ?page= (the URL sets the value; the widget would then drop a value
            # that is not one of its options to None): show the default page instead.
            self.nav.value = DEFAULT_PAGE   # (this watcher runs again, for the default page)
            return
        entry = BY_SLUG[self.nav.value]
        page = self.page(entry.slug)
        self.heading.object = f"### {entry.question}"
        self.controls.objects = [page.controls]
        note = st.skipped_note(self.store)   # queries go on over the rest: say what they left out
        self.damaged.object = note
        self.damaged.visible = bool(note)
        self.main.objects = [self.damaged, self.heading, page.main]

    def template(self) -> pn.template.FastListTemplate:
        if pn.state.location is not None:   # served: the page is part of the URL
            pn.state.location.sync(self.nav, {"value": "page"})
        return pn.template.FastListTemplate(
            title=TITLE, design=LocalFast, font_url="",
            sidebar=[pn.pane.Markdown("**Page**", margin=(0, 10)), self.nav, pn.layout.Divider(), self.controls],
            main=[self.main],
        )
