"""The LESS selection service: FastAPI app, auth, micro-batching worker, jobs and metrics.

Start it with ``python -m service --config service.json`` (or the ``less-serve`` script);
build the app in code with ``service.app.create_app(settings)``.
"""
