"""`panel serve workbench`: the dashboard's entry point, run once per browser session.

Kept thin, with absolute imports: bokeh runs this file (and the package __init__) under a
random module name, so relative imports would load a second copy of the views.
"""
import logging

import panel as pn

from workbench.views.app import (Workbench, expire_on_close, quiet_closed_socket_writes, release_memory,
                                 tolerate_detached_close, without_mathjax)

logging.getLogger("workbench").setLevel(logging.INFO)   # the server log shows our INFO lines too
pn.extension("tabulator", sizing_mode="stretch_width", notifications=True)
pn.state.on_session_destroyed(release_memory)
quiet_closed_socket_writes()               # a tab closing mid-patch is not a server error
tolerate_detached_close()                  # nor one closing just after bokeh's keep-alive ping failed
without_mathjax()                          # no TeX on any page: 1.8 MB less script per page
pn.state.onload(expire_on_close)        # a closed session is discarded in ~17 s, not 10 min

# The template adds its roots to the session's document one at a time, and Bokeh recomputes the
# document's model graph after each; frozen, it does so once at the end. In process, the Pareto
# page's document (build, server_doc, to_json) then costs 0.44 CPU s, not 0.59 (best of 4 each,
# 2026-12-07). Taken out on 2026-12-04 because one 20-session run with it registered 19 of 20
# brushes; runs without it have since registered 19 too (docs/bench-sessions.md): noise.
with pn.state.curdoc.models.freeze():
    Workbench().template().servable()   # reads $WORKBENCH_STORE, else the default store
