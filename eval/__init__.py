"""Evaluation: metrics, suites and reports (groundedness, prompt outputs)."""
