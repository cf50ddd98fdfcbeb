"""Streamlit glue: the only part of resnet_viz that imports streamlit (shared widgets, session jobs)."""
