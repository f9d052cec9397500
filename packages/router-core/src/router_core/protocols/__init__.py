"""Client protocols other than OpenAI chat, and their translation to and from it.

Rules:
- Pure: no I/O, no clock, no randomness (ids and times are passed in).
- Each protocol module validates its own request bodies (problems collected
  as in `router_core.requests`), and translates requests, answers and
  streams (event by event) to and from OpenAI chat completions, the protocol
  every backend kind speaks.
- What cannot be translated faithfully raises `ClientError(
  Catalog.UNSUPPORTED_FEATURE)` naming the feature; nothing is silently
  dropped.
"""
