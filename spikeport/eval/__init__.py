"""Accuracy vs timesteps against the ANN; JSON, markdown and PNG reports."""

from spikeport.eval.evaluate import Requirement, check_requirements, evaluate
from spikeport.eval.report import markdown_table, write_json, write_plot

__all__ = [
    "Requirement",
    "check_requirements",
    "evaluate",
    "markdown_table",
    "write_json",
    "write_plot",
]
