"""`panel serve workbench`: the dashboard's entry point, run once per browser session.

Kept thin, with absolute imports: bokeh runs this file (and the package __init__) under a
random module name, so relative imports would load a second copy of the views.
"""
import panel as pn

from workbench.views.app import ParetoPage

pn.extension("tabulator", sizing_mode="stretch_width")

page = ParetoPage()  # reads $WORKBENCH_STORE, else the default store
intro = pn.bind(lambda model: pn.pane.Markdown(
    f"### Error vs bits per weight — {model}\n"
    "Each point is one format measured on this model's real tensors. The step line is the "
    "Pareto frontier: nothing measured does better for as few bits. llama.cpp's own types are "
    "labelled." if model else "### Error vs bits per weight"), page.param.model)

pn.template.FastListTemplate(
    title="Hyper-Quantization Workbench",
    sidebar=[page.controls],
    main=[pn.Column(intro, page.main, sizing_mode="stretch_width")],
).servable()
