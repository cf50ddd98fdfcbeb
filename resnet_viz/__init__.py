"""resnet-viz: train plain and residual networks side by side and see why skip connections matter.

The library imports no Streamlit (only `resnet_viz.ui` does), so it works in notebooks and the CLI.
"""

__version__ = "0.1.0"
