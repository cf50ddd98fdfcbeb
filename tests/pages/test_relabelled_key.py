"""`relabelled_key`: a box whose option labels change gets a new widget (so the browser redraws its label),
and the value picked last carries over."""

from streamlit.testing.v1 import AppTest


def _app() -> None:
    import streamlit as st

    from resnet_viz.ui.widgets import relabelled_key

    depth = st.session_state.get("depth", 20)
    options = ["stage1.block1", "stage2.block1", "stage3.block1"]
    key = relabelled_key("layer", options, depth)
    st.session_state["layer"] = st.selectbox("Layer", options, key=key, format_func=lambda o: f"{o} at {depth}")


def test_new_labels_new_widget_same_value():
    at = AppTest.from_function(_app).run()
    first = at.selectbox[0].key
    at.selectbox[0].set_value("stage2.block1").run()
    assert at.selectbox[0].key == first  # the same labels: the same widget
    at.session_state["depth"] = 56
    at.run()
    box = at.selectbox[0]
    assert box.key != first and box.value == "stage2.block1"  # a new widget, the pick carried over
    assert box.options == [f"stage{i}.block1 at 56" for i in (1, 2, 3)]
    assert not at.exception
