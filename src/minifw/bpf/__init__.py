"""eBPF, in pure Python: the instruction assembler and the BTF reader. No I/O here; the
syscalls that load and attach programs live in ``kernel/bpf``."""
