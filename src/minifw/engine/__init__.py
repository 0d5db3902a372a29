"""Pure packet evaluation: what the compiled ruleset does to a packet, without the kernel."""
