"""The shared runtime: the reactor (flusher, watcher, timer), wake-ups, cancel scopes, pacing.

Private. The only package that asks whether it runs on asyncio or trio (``backend``); it knows
nothing of HTTP, SSE or chat.
"""
