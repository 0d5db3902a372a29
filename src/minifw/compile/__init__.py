"""Compilers from the rule model to kernel documents. Pure."""
