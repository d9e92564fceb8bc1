"""What the pages about one model share: the model selector filled from the store, the
re-read after a sweep or an import, the sidebar + main layout, the importance-matrix choices.

A subclass watches ``model`` in its own ``_load_model`` (which returns at once for None),
drops its caches in ``_forget`` and shows one-line problems with ``_show_message``.
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import panel as pn
import param

from workbench import store as st

EMPTY_STORE = "no results yet: run `workbench sweep`"


def imatrix_options(store: str | Path, model: str) -> dict[str, str]:
    """{label: fingerprint} of the importance matrices ``model`` has runs with; "none" (runs
    without one, fingerprint "") first, the others named by file and fingerprint prefix."""
    return {(n if fp == "" else f"{n} ({fp[:8]})"): fp for fp, n in st.imatrices(store, model).items()}


class ModelPage(pn.viewable.Viewer):
    """Base of the pages that show one model of the store at a time."""

    model = param.Selector(default=None, objects=[], doc="Model whose results are shown")

    def __init__(self, store: str | Path | None = None, **params):
        super().__init__(**params)
        self.store = Path(store) if store else st.default_store()

    def __panel__(self):
        return pn.Row(pn.Column(self.controls, width=300), self.main, sizing_mode="stretch_width")

    def _open(self, model: str | None):
        """Offer the store's models and choose ``model`` (else the first): → ``_load_model``."""
        try:
            models = st.models(self.store)
        except (duckdb.Error, OSError) as exc:
            self._show_message(f"cannot read the store at {self.store}: {str(exc).splitlines()[0]}", "danger")
            return
        if not models:
            note = st.skipped_note(self.store)   # a store whose only files are damaged
            self._show_message(f"{EMPTY_STORE} (store: {self.store})" + (f"; {note}" if note else ""),
                               "danger" if note else "info")
            return
        self.param.model.objects = models
        self.model = model if model in models else models[0]

    def reload(self):
        """Re-read the store (a sweep or an import changed it), keeping the model if it is still
        there; the detour through None makes the watchers run even when it is."""
        self._forget()
        model = self.model
        self.model = None
        self._open(model)

    def _forget(self):
        """Drop what was read from the store."""

    def _show_message(self, text: str, kind: str):
        raise NotImplementedError
