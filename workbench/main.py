"""`panel serve workbench`: the dashboard's entry point, run once per browser session.

Kept thin, with absolute imports: bokeh runs this file (and the package __init__) under a
random module name, so relative imports would load a second copy of the views.
"""
import logging

import panel as pn

from workbench.views.app import (Workbench, expire_on_close, quiet_closed_socket_writes, release_memory,
                                 without_mathjax)

logging.getLogger("workbench").setLevel(logging.INFO)   # the server log shows our INFO lines too
pn.extension("tabulator", sizing_mode="stretch_width", notifications=True)
pn.state.on_session_destroyed(release_memory)
quiet_closed_socket_writes()               # a tab closing mid-patch is not a server error
without_mathjax()                          # no TeX on any page: 1.8 MB less script per page
pn.state.onload(expire_on_close)        # a closed session is discarded in ~17 s, not 10 min

# The template adds its roots to the session's document one at a time, and Bokeh recomputes the
# document's model graph after each (~27 times a session); frozen, it does so once at the end:
# 0.17 s less server CPU per session (0.78 -> 0.61 s to build the Pareto page's document).
with pn.state.curdoc.models.freeze():
    Workbench().template().servable()   # reads $WORKBENCH_STORE, else the default store
