"""Investigations of the synthetic benchmark behind docs/findings.md, run from the checkout
(`python -m tools.findings.probe RUN`); not part of the installed package."""
