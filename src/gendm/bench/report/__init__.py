"""Benchmark reports: Markdown, one self-contained HTML file, PNG plots and summary.json.

``document`` renders the blocks, ``runs`` prepares the run records, ``sections`` writes each table and
figure, ``build`` assembles a report from records or from a benchmark directory's store.
"""

from gendm.bench.report.build import build_report, format_summary_table, task_reference, write_report

__all__ = ["build_report", "format_summary_table", "task_reference", "write_report"]
