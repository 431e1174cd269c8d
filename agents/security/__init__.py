"""Security: per-migration credentials, TLS 1.3 with channel binding, the service locator."""
