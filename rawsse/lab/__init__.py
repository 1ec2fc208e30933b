"""The wire lab: a page, served by rawsse itself, to watch, cut and replay streams in a browser.

``mount_lab(app, chat)`` serves it (the demo app of ``rawsse serve`` mounts it at ``/``). One
HTML file, no build step, nothing fetched from elsewhere: a chat view, a wire pane, a resume lab
and a live view of ``/metrics``. See the README's "The wire lab" section.
"""

from rawsse.lab._mount import mount_lab

__all__ = ["mount_lab"]
