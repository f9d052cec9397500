"""The `router` command's tests: simulate, validate, keys, usage, demo and its
packaging. They run the command in-process (`router_cli.main.main`) or as a
subprocess; a test that compares with a live router uses `start_router` and the
mock backends from tests/helpers/. Nothing here needs Redis or Kafka.
"""
