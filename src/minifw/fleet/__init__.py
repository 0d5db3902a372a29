"""Edges to the fleet's engines: CrowdSec's Local API (``lapi.py``)."""
