"""`router smoke` and `router loadtest`: checks of a running deployment over HTTP."""
