"""Demos of kaizen_async: real jobs built on the runtime (``python -m demo.py_to_go``) and a
small HTTP server (``python -m demo.server``)."""
