"""The operations of minifw: rules, sets, explain, hooks; what the CLI and the API call."""
