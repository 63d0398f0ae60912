"""`make gpu-check`: every GPU path run and measured in one short script (see README.md here)."""
