"""The client's view: UDP probes of the guest's service (stdlib only)."""
