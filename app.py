"""resnet-viz: the Streamlit entry point. Navigation over pages/, the shared sidebar, thread setup.

streamlit run app.py
"""

from pathlib import Path

import streamlit as st
import torch

from resnet_viz.jobs import LIMITER
from resnet_viz.ui.widgets import sidebar_status

PAGES = Path(__file__).parent / "pages"


@st.cache_resource(show_spinner=False)
def configure_torch() -> int:
    """Once per server: intra-op threads shared fairly by the jobs allowed to train at once."""
    threads = max(1, (torch.get_num_threads() or 1) // max(1, LIMITER.max_jobs))
    torch.set_num_threads(threads)
    return threads


def main() -> None:
    st.set_page_config(page_title="resnet-viz", page_icon=":material/hub:", layout="wide")
    configure_torch()
    page = st.navigation(
        [
            st.Page(PAGES / "home.py", title="Home", icon=":material/home:", default=True),
            st.Page(PAGES / "lab.py", title="Training lab", icon=":material/monitoring:", url_path="lab"),
            st.Page(
                PAGES / "depth_study.py",
                title="Depth study",
                icon=":material/stacked_line_chart:",
                url_path="depth-study",
            ),
            st.Page(
                PAGES / "receptive_fields.py",
                title="Receptive fields",
                icon=":material/center_focus_strong:",
                url_path="receptive-fields",
            ),
            st.Page(
                PAGES / "attributions.py", title="Attributions", icon=":material/visibility:", url_path="attributions"
            ),
        ]
    )
    with st.sidebar:
        st.markdown("### resnet-viz")
        st.caption("Why skip connections matter, trained live.")
        sidebar_status()
    page.run()


main()
