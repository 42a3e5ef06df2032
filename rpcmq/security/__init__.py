"""Message authentication: shared keys, signing and verifying."""
