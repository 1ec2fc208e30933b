"""``rawsse trace``: the wire inspector (every read, chunk and event of one request).

A tool, not a library: the command line is its interface (``rawsse trace --help``).
"""
