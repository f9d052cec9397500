"""The core tests: router_core alone, as pure functions of their arguments.

They import nothing of router_server or router_cli (tests/test_suite_hygiene.py
checks it), start nothing and need no fixture of the other levels: time is an
argument, randomness a seeded `random.Random`, and the in-memory ports ship in
router_core. Hypothesis profiles are set in tests/conftest.py.
"""
