"""Evaluation and inspection: bench statistics, contact sheets, videos."""
