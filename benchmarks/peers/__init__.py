"""Peer servers for the benchmarks: each serves the workload of ``workload.py``."""
