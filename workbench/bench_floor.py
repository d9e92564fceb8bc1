"""The reference page of `workbench bench --sessions`: the lightest page its clients can measure.

Served by plain `bokeh serve` (no Panel, no HoloViews, no template, no table): one Bokeh scatter
of the same store's formats (bpw against nmse on a log axis, one point per format, the
box-select and tap tools) and one Div, which the server rewrites on each selection ("Selected
formats: ..."). The clients of ``bench_sessions`` run the same script against it as against
the Pareto page: wait for a plot frame whose title says "is better" and for the caption, drag a
box-select, wait for the caption to change. What the Pareto page costs beyond this page is the
dashboard's own cost; what this page costs is the floor that any Bokeh page pays with these
clients on this machine (BokehJS loaded, parsed and run in a chromium context per session, one
document and one websocket per session on the server).

Not part of the dashboard: ``bench_sessions.measure(..., floor=True)`` serves it.
"""
from __future__ import annotations

import os


def figures(store: str):
    """The scatter and the caption, from the store's first model (its summary, as the Pareto page
    reads it, with every tensor)."""
    import numpy as np
    from bokeh.models import ColumnDataSource, Div
    from bokeh.plotting import figure

    from workbench import store as st
    model = st.models(store)[0]
    df = st.summary(store, model)
    df = df[np.isfinite(df["nmse"]) & (df["nmse"] > 0)]
    src = ColumnDataSource({"bpw": df["bpw"].to_numpy(), "nmse": df["nmse"].to_numpy(),
                            "format": df["format"].tolist(), "kind": df["family"].astype(str).tolist()})
    p = figure(width=900, height=560, y_axis_type="log", tools="box_select,tap,reset",
               title=f"{model}: nmse against bits per weight (lower is better)",
               x_axis_label="bits per weight", y_axis_label="nmse",
               tooltips=[("format", "@format"), ("bpw", "@bpw"), ("nmse", "@nmse")])
    p.scatter("bpw", "nmse", source=src, size=7)
    caption = Div(text=f"Selected formats: none ({len(df)} formats)")

    def selected(attr, old, new):
        names = [src.data["format"][i] for i in new]
        caption.text = f"Selected formats: {len(names)}: " + ", ".join(names[:20])
    src.selected.on_change("indices", selected)
    return p, caption


if __name__.startswith("bokeh_app"):    # `bokeh serve workbench/bench_floor.py`
    from bokeh.io import curdoc
    from bokeh.layouts import column
    curdoc().add_root(column(*figures(os.environ["WORKBENCH_STORE"])))
