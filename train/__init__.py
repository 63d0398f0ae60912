"""Episodic few-shot training and evaluation."""
