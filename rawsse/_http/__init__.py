"""The HTTP/1.1 driver: one connection's life on h11, its limits, and the body writer.

Private: ``rawsse.server`` runs it and ``rawsse.response`` writes through its ``BodyWriter``.
This package knows nothing of SSE or chat.
"""
