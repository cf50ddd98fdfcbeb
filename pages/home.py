"""Home: what a residual block is, what each page shows, and one-click presets."""

from pathlib import Path

import streamlit as st

from resnet_viz.lab import BEYOND, PRESETS, Preset, encode
from resnet_viz.ui.shell import require_shell

ASSETS = Path(__file__).parent.parent / "assets"

PAGES = {
    "Training lab": "two models trained live side by side: loss, accuracy, gradient flow per layer and "
    "per block, a live skip-connection slider, decision boundaries on 2-D data, attention maps of Transformers, "
    "oversmoothing in graph networks. Finished runs are stored.",
    "Depth study": "He et al.'s degradation result at six depths: plain nets get worse as they get deeper, "
    "residual nets do not. A classroom sweep replays instantly once it has run.",
    "Receptive fields": "how much of the image each layer can see (theoretical field, identical with and "
    "without skips) and how much it actually uses (the effective field of Luo et al. 2016).",
    "Attributions": "what each model looks at, by seven Captum methods, with sanity checks (Adebayo et al. "
    "2018) and localisation scores against ground-truth masks.",
    "Loss landscape": "the loss around the trained weights of a plain net and its residual twin (Li et al. 2018): "
    "chaotic without shortcuts, smooth with them; the line from the initial weights, curvature, the training path.",
    "Limits & pitfalls": "what skips do not fix, measured: block lesions (not an ensemble), calibration, robustness, "
    "the cost of depth, init sensitivity, and a task that needs a global view.",
}


def presets() -> None:
    st.subheader("Start with a demo")
    st.caption("Each button opens the training lab configured; press Train there.")
    groups: dict[str, list[Preset]] = {}
    for preset in PRESETS.values():
        groups.setdefault(preset.group, []).append(preset)
    for group, members in groups.items():
        if group == BEYOND:
            st.markdown(
                f"**{BEYOND}**: residual connections are in every deep architecture now. The same toggle on a "
                "Transformer (where LayerNorm sits matters as much as the skip) and on a deep graph network."
            )
        for col, preset in zip(st.columns(len(members)), members, strict=True):
            with col, st.container(border=True):
                st.markdown(f"**{preset.title}**")
                st.caption(preset.point)
                params = {**encode(preset.config.normalized()), "preset": preset.key}
                st.page_link("pages/lab.py", label="Open", icon=":material/play_arrow:", query_params=params)


def main() -> None:
    require_shell()  # a deep link on a fresh server: rerun inside app.py's navigation
    st.title("Why skip connections matter")
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.markdown((ASSETS / "home.md").read_text())
    with right:
        st.image(str(ASSETS / "residual_block.svg"), caption="A basic residual block (He et al. 2015, Fig. 2).")
    presets()
    st.subheader("Pages")
    for name, text in PAGES.items():
        st.markdown(f"- **{name}**: {text}")


main()
