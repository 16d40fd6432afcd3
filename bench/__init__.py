"""Benchmarks (not tests): trackline against its peers; `python -m bench.run` prints the table."""
