"""Persistence: the state directory (state, intent, lock) and the set record."""
