"""The web dashboard (README *Dashboard*): ``taskmesh dashboard``.

Modules, by concept: :mod:`.app` (routes, server), :mod:`.auth` (token and
session cookie), :mod:`.api` (JSON and SSE), :mod:`.pages` and :mod:`.views`
(HTML), :mod:`.data` (what is read from Redis), :mod:`.display` (payloads
shown without unpickling), :mod:`.hub` (the one events subscription fanned
out to every browser). Static assets live in ``static/`` inside the package.
"""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
