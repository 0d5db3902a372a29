"""Structured events: NFLOG records and hook functions turned into JSON events, their files and journald."""
