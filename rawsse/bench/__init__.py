"""``rawsse bench``: the load generator (many concurrent SSE streams, latency percentiles).

A tool, not a library: the command line is its interface (``rawsse bench --help``). Its modules
are private and may change.
"""
