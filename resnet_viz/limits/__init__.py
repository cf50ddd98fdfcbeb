"""Limits and pitfalls of ResNets, measured: what skip connections do *not* fix.

One module per analysis, each a plain function of model(s) and data returning a table, usable from a
notebook, the CLI (``python -m resnet_viz limits ...``) and the *Limits & pitfalls* page:

- `lesions`: delete blocks at test time (Veit et al. 2016), path lengths and their gradients.
- `calibration`: ECE, reliability diagram, NLL, temperature scaling (Guo et al. 2017).
- `robustness`: accuracy under input corruptions at five severities.
- `cost`: parameters, FLOPs, latency and activation memory against depth; accuracy against latency.
- `init_sensitivity`: final loss and failures over init schemes, gains and seeds.
- `global_reasoning`: a task whose label needs two far-apart marks, against the receptive field.

`runs.GridTask` trains the grids some analyses need, through the run store, in the background.
Nothing here imports Streamlit.
"""
