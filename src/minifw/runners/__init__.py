"""Long-running processes: the Python hook runner and its supervision."""
