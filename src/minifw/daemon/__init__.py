"""`minifw daemon`: the long-running process that owns hook runners, the NFLOG reader, metrics and the control socket."""
