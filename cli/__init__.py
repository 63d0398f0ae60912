"""Command-line front ends (typer apps). They parse and print; the work lives in `pipeline/` and `train/`."""
