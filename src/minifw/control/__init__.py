"""The control socket: JSON lines over control.sock in the state directory, the protocol and its client."""
