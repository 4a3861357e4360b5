"""Benchmark harness: runs, reliable statistics and reports."""
