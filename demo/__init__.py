"""Demos of kaizen_async: real programs built on the runtime (``python -m demo.server``)."""
