"""The GPU gauges of `folo serve`'s /metrics, from NVML loaded at run time:
with the fake NVML library (tests/c/fake_nvml.c, loaded through
FOLO_NVML_LIBRARY) they carry exactly its figures, read afresh by every
scrape; without NVML they are absent, not zeros, and the log says why."""

import json
import os
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from server_helpers import metric, server_fixture

FAKE = os.environ.get("FOLO_FAKE_NVML",
                      str(Path(os.environ.get("FOLO_BUILD_DIR", "build")) / "tests/libfake_nvml.so"))
MISSING = "/nonexistent/libnvidia-ml.so.1"

# The fake's figures (tests/c/fake_nvml.h): device 0's used memory grows by
# a step with every query and its utilization alternates; device 1 is fixed
# and reports no utilization.
TOTAL0, USED0, STEP0 = 85520809984, 1073741824, 1048576
UTIL0 = [0.10, 0.30]
TOTAL1, USED1 = 150754820096, 4242424242

GPU_GAUGES = ["folo:gpu_memory_used_bytes", "folo:gpu_memory_total_bytes",
              "folo:gpu_utilization_perc"]

with_fake = server_fixture(env={"FOLO_NVML_LIBRARY": FAKE})
without_nvml = server_fixture(env={"FOLO_NVML_LIBRARY": MISSING})


def test_gauges_carry_the_fake_figures(with_fake):
    assert "serve: /metrics reports 2 GPU(s) through NVML" in with_fake.log_text()
    # Scrapes before this test's (one per scrape) moved device 0 on.
    used = metric(with_fake.metrics(), "folo:gpu_memory_used_bytes", gpu="0")
    k0, rest = divmod(int(used) - USED0, STEP0)
    assert k0 >= 0 and rest == 0
    for k in range(k0 + 1, k0 + 4):
        m = with_fake.metrics()
        assert metric(m, "folo:gpu_memory_used_bytes", gpu="0") == USED0 + k * STEP0
        assert metric(m, "folo:gpu_memory_total_bytes", gpu="0") == TOTAL0
        assert metric(m, "folo:gpu_utilization_perc", gpu="0") == UTIL0[k % 2]
        assert metric(m, "folo:gpu_memory_used_bytes", gpu="1") == USED1
        assert metric(m, "folo:gpu_memory_total_bytes", gpu="1") == TOTAL1
        # Device 1 has no utilization: no sample rather than a 0.
        assert ("folo:gpu_utilization_perc", frozenset({("gpu", "1")})) not in m
        gpu_samples = [key for key in m if key[0] in GPU_GAUGES]
        assert len(gpu_samples) == 5, gpu_samples

    status, raw = with_fake.get("/metrics")
    assert status == 200
    types = {f.name: f.type for f in text_string_to_metric_families(raw.decode())}
    for name in GPU_GAUGES:
        assert types[name] == "gauge"


def test_the_grafana_gpu_panels_read_gauges_the_server_has(with_fake):
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-folo.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"folo:gpu_[a-z0-9_]+", e)}
    assert names == set(GPU_GAUGES)
    assert names <= {name for name, _ in with_fake.metrics()}


def test_no_gauges_without_nvml(without_nvml):
    m = without_nvml.metrics()
    assert not [key for key in m if key[0].startswith("folo:gpu_")]
    # The rest of the document is there.
    assert metric(m, "folo:num_requests_running") == 0
    log = without_nvml.log_text()
    assert f"serve: /metrics has no GPU gauges: NVML not loaded: {MISSING}" in log


def bench_json(tmp_path, library):
    """`folo bench latency`'s JSON, run with NVML loaded from library."""
    import subprocess
    out = tmp_path / "bench.json"
    env = dict(os.environ, FOLO_NVML_LIBRARY=library)
    subprocess.run([os.environ.get("FOLO_BIN", "build/folo"), "bench", "latency",
                    "-m", os.environ["FOLO_TEST_MODEL"], "--device", "cpu", "--threads", "1",
                    "--batch-sizes", "1", "--output-len", "4", "--iters", "1",
                    "--json", str(out)], env=env, check=True, capture_output=True)
    return json.loads(out.read_text())


def test_bench_reports_the_fake_gpu(tmp_path):
    """`folo bench` samples the GPU over its run: with the fake, its JSON
    names the device and total, the peak is the last of the growing
    readings (at least the first two, taken at start and stop), and the
    mean utilization lies between the fake's two values."""
    gpu = bench_json(tmp_path, FAKE)["gpu"]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["memory_total_bytes"] == TOTAL0
    peak = gpu["peak_memory_used_bytes"]
    assert peak >= USED0 + STEP0 and (peak - USED0) % STEP0 == 0
    assert 100 * UTIL0[0] <= gpu["mean_gpu_utilization_pct"] <= 100 * UTIL0[1]


def test_bench_without_nvml_has_no_gpu_figures(tmp_path):
    assert "gpu" not in bench_json(tmp_path, MISSING)
