"""The guest and its hypervisor-side care: the built-in workload, its network identity and
announcement, throttling, the guard that resumes it if the source dies, markers."""
