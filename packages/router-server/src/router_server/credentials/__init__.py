"""Credentials: managed keys (store, live view), signed requests, OIDC tokens."""
