"""Statistics of the benchmark harness on a workload whose answer is known: `time.sleep(0.01)`.

Sleep never returns early, so lower bounds on latency (upper bounds on throughput) are exact; upper bounds on latency
leave room for a loaded CI machine, and rates are compared through medians, which a few scheduler hiccups cannot move."""
import time

import numpy as np
import pytest

from musicml.bench.harness import latency_stats, max_qps_under, offline, peak_memory, record, server, single_stream

SERVICE_S = 0.01


def sleep(*_):
    time.sleep(SERVICE_S)


def one(i):
    return (i,)


def test_latency_stats_percentiles():
    st = latency_stats(np.random.default_rng(0).permutation(np.arange(1, 1001)) / 1e3)
    assert st.n == 1000 and st.p50_ms == pytest.approx(500.5) and st.p99_ms == pytest.approx(990.01)
    assert st.min_ms == 1 and st.max_ms == 1000 and st.mean_ms == pytest.approx(500.5)


def test_single_stream_measures_service_time():
    seen = []
    st = single_stream(lambda i: (seen.append(i), sleep()), one, n_queries=200, warmup=10)
    assert st.n == 200 and 9.9 < st.p50_ms < 20, st
    assert len(seen) == 210 and len(set(seen)) == 210  # fresh input per query: no query repeats another


def test_offline_throughput_scales_with_batch():
    rows = offline(lambda b: time.sleep(SERVICE_S), lambda b, s: (b,), batch_sizes=(1, 8), min_time_s=0.1)
    assert 0.5 / SERVICE_S < rows[0]["items_per_s"] <= 1 / SERVICE_S * 1.01
    assert 8 * rows[0]["batch_ms_p50"] / rows[1]["batch_ms_p50"] == pytest.approx(8, rel=0.25)


def test_server_light_load_has_little_queueing():
    r = server(sleep, one, qps=0.2 / SERVICE_S, duration_s=1.0, seed=1)
    assert r["completed"] == r["n"] and not r["overloaded"]
    assert r["latency"].p50_ms < 1.5 * SERVICE_S * 1e3 + 0.5, r["latency"]
    assert r["qps_offered"] == pytest.approx(0.2 / SERVICE_S, rel=0.3)


def test_server_latency_counts_queueing_from_scheduled_arrival():
    "Above capacity the queue grows linearly: p99 is many service times (a closed loop would report ~2 ms)."
    r = server(sleep, one, qps=1.6 / SERVICE_S, duration_s=1.0, seed=2)
    assert r["latency"].p99_ms > 20 * SERVICE_S * 1e3, r["latency"]
    assert r["qps_achieved"] <= 1.05 / SERVICE_S


def test_server_two_workers_double_capacity():
    one_w = server(sleep, one, qps=0.8 * 2 / SERVICE_S, duration_s=0.5, seed=3, workers=1)
    two_w = server(sleep, one, qps=0.8 * 2 / SERVICE_S, duration_s=0.5, seed=3, workers=2)
    assert two_w["latency"].p99_ms < one_w["latency"].p99_ms / 3


def test_max_qps_under_finds_capacity():
    m = max_qps_under(sleep, one, p99_bound_ms=50, duration_s=1.0, steps=6)
    cap = 1 / SERVICE_S
    assert 0.5 * cap < m["qps"] <= 1.05 * cap, m
    assert m["p99_ms"] <= 50
    assert 0.6 * cap < m["capacity_estimate"] <= 1.01 * cap


def test_peak_memory_sees_allocation():
    def work():
        a = np.ones(64 * 2**20 // 8)
        time.sleep(0.02)
        return a.sum()
    m = peak_memory(work)
    assert 50 < m["delta_mb"] < 120, m


def test_record_has_environment_and_threads():
    r = record(threads=3, stats=latency_stats([0.001, 0.002]))
    assert r["threads"] == 3 and r["environment"]["torch"] and r["stats"]["n"] == 2
