"""BPF at the kernel edge: the bpf(2) syscall through ctypes (no libbpf, bpftool or clang),
maps, program loading with the verifier's log, netfilter links, bpffs pins, the dispatcher's
attachments and the ringbuf reader."""
