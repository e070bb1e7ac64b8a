"""Experiment runners: whole training runs compared end to end (`python -m everest.experiments.transfer`)."""
