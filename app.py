"""resnet-viz: the Streamlit entry point. Navigation over pages/, the shared sidebar, thread setup.

streamlit run app.py
"""

from pathlib import Path

import streamlit as st
import torch

from resnet_viz.ui import live_chart
from resnet_viz.ui.roles import teacher_login
from resnet_viz.ui.run_panel import sidebar_status
from resnet_viz.ui.session import run_service
from resnet_viz.ui.shell import shell

PAGES = Path(__file__).parent / "pages"


def _page(file: str, title: str, icon: str) -> st.Page:
    """A page whose URL path is its file name (`/depth_study`): Streamlit's legacy pages/ mode, which
    serves a fresh server's first request, finds the same page by that name (see resnet_viz/ui/shell.py)."""
    return st.Page(PAGES / file, title=title, icon=icon, url_path=Path(file).stem)


def configure_torch() -> int:
    """Intra-op threads of this script run's thread (each thread has its own): every core while nothing
    trains, one while runs train, so a page's analysis never oversubscribes the cores they use."""
    scheduler = run_service().scheduler
    training, _ = scheduler.counts()
    threads = 1 if training else scheduler.cores
    torch.set_num_threads(threads)
    return threads


def main() -> None:
    st.set_page_config(page_title="resnet-viz", page_icon=":material/hub:", layout="wide")
    configure_torch()
    page = st.navigation(
        [
            st.Page(PAGES / "home.py", title="Home", icon=":material/home:", default=True),
            _page("lab.py", "Training lab", ":material/monitoring:"),
            _page("depth_study.py", "Depth study", ":material/stacked_line_chart:"),
            _page("receptive_fields.py", "Receptive fields", ":material/center_focus_strong:"),
            _page("attributions.py", "Attributions", ":material/visibility:"),
            _page("loss_landscape.py", "Loss landscape", ":material/landscape:"),
            _page("limits.py", "Limits & pitfalls", ":material/warning:"),
        ]
    )
    with st.sidebar:
        st.markdown("### resnet-viz")
        st.caption("Why skip connections matter, trained live.")
        if page.url_path != "lab":  # the lab shows its run itself: its tabs need no second timer for it
            sidebar_status()
        teacher_login()
        live_chart.preload()  # every page: a student's first run draws without waiting for the script
    with shell():
        page.run()


main()
