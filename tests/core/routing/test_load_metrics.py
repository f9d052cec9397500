"""Backends' own load from their Prometheus pages (vLLM, SGLang, TGI), the
tokens a request in flight holds, and the prompt text affinity hashes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.affinity import prefix_blocks, prompt_text
from router_core.config_enums import LoadMetricsFormat
from router_core.limits.plan import outstanding_tokens, prompt_bound
from router_core.load_metrics import LoadSample, MetricsError, parse
from router_core.requests import Operation, validate_openai

VLLM_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 3.0
vllm:num_requests_running{engine="1",model_name="llama"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="llama"} 0.75
vllm:iteration_tokens_total_bucket{le="1.0",model_name="llama"} 3.0
vllm:num_requests_running_total_lookalike 99
"""


def test_vllm_counts_add_up_over_label_sets_and_the_cache_is_the_fullest() -> None:
    sample = parse(VLLM_PAGE, LoadMetricsFormat.VLLM)
    assert sample == LoadSample(running=5.0, waiting=4.0, cache_usage=0.75)
    assert sample.load(max_in_flight=18) == 0.75  # the cache is fuller than 9/18
    assert sample.load(max_in_flight=10) == 0.9
    assert sample.load(max_in_flight=4) == 1.0  # at most full


def test_older_vllm_names_its_cache_gpu_cache_usage_perc() -> None:
    page = "vllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.5 1700000000000\n"
    assert parse(page, LoadMetricsFormat.VLLM) == LoadSample(1.0, 0.0, 0.5)


def test_sglang_and_tgi_have_their_own_names() -> None:
    sglang = (
        'sglang:num_running_reqs{model_name="m"} 7\n'
        'sglang:num_queue_reqs{model_name="m"} 1\n'
        'sglang:token_usage{model_name="m"} 0.28\n'
    )
    assert parse(sglang, LoadMetricsFormat.SGLANG) == LoadSample(7.0, 1.0, 0.28)
    tgi = "# TYPE tgi_queue_size gauge\ntgi_queue_size 2\ntgi_batch_current_size 6\n"
    assert parse(tgi, LoadMetricsFormat.TGI) == LoadSample(6.0, 2.0, None)
    assert parse(tgi, LoadMetricsFormat.TGI).load(16) == 0.5


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        ("<html>502 Bad Gateway</html>", "not vllm metrics"),
        ("", "not vllm metrics"),
        ("sglang:num_running_reqs 3\n", "not vllm metrics"),  # another server's page
        ("vllm:num_requests_running NaN\n", "not a finite number"),
        ("vllm:num_requests_running -1\n", "not a finite number"),
        ("vllm:num_requests_running +Inf\n", "not a finite number"),
        ("vllm:num_requests_running many\n", "not a finite number"),
        ("vllm:num_requests_running\n", "not a finite number"),
    ],
)
def test_a_page_that_is_not_the_servers_metrics_is_refused(page: str, problem: str) -> None:
    with pytest.raises(MetricsError, match=problem):
        parse(page, LoadMetricsFormat.VLLM)


@given(st.text(max_size=300))
def test_any_text_is_a_sample_or_a_metrics_error(page: str) -> None:
    try:
        sample = parse(page, LoadMetricsFormat.VLLM)
    except MetricsError:
        return
    assert 0 <= sample.load(8) <= 1


def test_a_request_holds_its_prompt_bound_plus_its_most_output() -> None:
    chat = validate_openai(
        Operation.CHAT, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert outstanding_tokens(chat, 4096) == prompt_bound(chat) + 4096
    capped = validate_openai(
        Operation.CHAT,
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7},
    )
    assert outstanding_tokens(capped, 4096) == prompt_bound(capped) + 7
    embed = validate_openai(Operation.EMBEDDING, {"model": "e", "input": "some text"})
    assert outstanding_tokens(embed, 4096) == prompt_bound(embed)


messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text()}
    ),
    max_size=8,
)


@given(messages, st.integers(min_value=1, max_value=400))
def test_a_limited_prompt_text_is_a_prefix_long_enough_for_its_blocks(
    chat: list[dict[str, str]], limit: int
) -> None:
    """Rendering stops past `limit` characters without changing any block
    that the whole text would have within it."""
    body = {"messages": chat}
    whole = prompt_text(Operation.CHAT, body)
    cut = prompt_text(Operation.CHAT, body, limit)
    assert whole.startswith(cut)
    assert len(cut) >= min(limit, len(whole))
    block = max(1, limit // 4)
    assert prefix_blocks(cut, block, 4) == prefix_blocks(whole, block, 4)
