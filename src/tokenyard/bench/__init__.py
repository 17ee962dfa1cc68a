"""`tokenyard bench`: a closed-loop streaming load generator for any OpenAI-compatible server.

loadgen.py sends the requests and times every chunk, stats.py turns timings into throughput and
latency percentiles, report.py prints them as a table or JSON. docs/benchmarks.md explains each figure.
"""
