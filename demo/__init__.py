"""Demos of kaizen_async: real jobs built on the runtime (``python -m demo.py_to_go``)."""
