"""The agents' own process: fork-server children, the GC held off, fault points for tests."""
