"""`panel serve workbench`: the dashboard's entry point, run once per browser session.

Kept thin, with absolute imports: bokeh runs this file (and the package __init__) under a
random module name, so relative imports would load a second copy of the views.
"""
import panel as pn

from workbench.views.app import Workbench, release_memory

pn.extension("tabulator", sizing_mode="stretch_width", notifications=True)
pn.state.on_session_destroyed(release_memory)

Workbench().template().servable()   # reads $WORKBENCH_STORE, else the default store
