"""The encryption modes a migration can ask for (``--encryption``), shared by the transports
(``agents.security.tls``) and the service locator, which loads them only when used."""

MODES = ("disabled", "opportunistic", "required")
