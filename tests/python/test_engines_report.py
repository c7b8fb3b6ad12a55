"""The figures and checks of bench/compare-engines.sh: bench/engines_report.py
(percentiles, vLLM-named summaries, the same-work check, greedy agreement,
folo's ratios, the table of a run directory), bench/vllm_cpu_requirements.py
(vllm-cpu's requirements made installable from PyPI) and the per-request
records of bench/engines_transformers.py on the tiny model.

Oracles: numpy's percentile; summaries, ratios and agreements worked out by
hand for hand-made timestamps and token lists; packaging's own parse of the
rewritten requirements."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import engines_report as er  # noqa: E402
from vllm_cpu_requirements import pypi_requirements  # noqa: E402


def test_percentile_is_numpys_linear_interpolation():
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 17, 100):
        values = rng.exponential(10.0, n).tolist()
        for q in (0, 1, 50, 90, 95, 99, 99.9, 100):
            assert er.percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12)
    assert er.percentile([], 50) is None


def request(ttft, e2el, out, itl, prompt=8):
    return {"prompt_tokens": prompt, "output_tokens": out, "ttft_ms": ttft, "e2el_ms": e2el,
            "itl_ms": itl}


def test_summary_of_hand_made_requests():
    reqs = [request(100.0, 400.0, 4, [100.0, 100.0, 100.0]),
            request(200.0, 200.0, 1, []),
            request(300.0, 500.0, 3, [50.0, 150.0], prompt=10)]
    s = er.summarize(reqs, 2.0)
    assert s["completed"] == 3
    assert s["total_input_tokens"] == 26 and s["total_output_tokens"] == 8
    assert s["request_throughput"] == 1.5 and s["output_throughput"] == 4.0
    assert s["mean_ttft_ms"] == 200.0 and s["median_ttft_ms"] == 200.0
    assert s["p99_ttft_ms"] == pytest.approx(np.percentile([100, 200, 300], 99))
    # TPOT leaves out the 1-token request: (400-100)/3 = 100 and (500-300)/2 = 100.
    assert s["mean_tpot_ms"] == 100.0
    # ITL is every gap: 100, 100, 100, 50, 150.
    assert s["mean_itl_ms"] == 100.0 and s["median_itl_ms"] == 100.0
    assert s["mean_e2el_ms"] == pytest.approx(1100.0 / 3)


def test_summary_without_multi_token_requests_has_no_tpot():
    s = er.summarize([request(10.0, 10.0, 1, [])], 1.0)
    assert s["mean_tpot_ms"] is None and s["mean_itl_ms"] is None


def test_summary_rejects_a_non_positive_duration():
    with pytest.raises(ValueError, match="duration"):
        er.summarize([request(1.0, 2.0, 2, [1.0])], 0.0)


def served(usage, local, out, ok=True):
    return {"ok": ok, "usage_prompt_tokens": usage, "prompt_tokens": local,
            "output_tokens": out}


def test_token_check_same_and_different_work():
    ref = [served(128, 128, 64), served(128, 128, 64)]
    same = er.token_check([served(128, 128, 64), served(128, 128, 64)], ref)
    assert same["same_work"] and same["usage_prompt_tokens"] == 256
    assert same["output_tokens"] == 128 and same["failed"] == 0

    short = er.token_check([served(128, 128, 64), served(128, 128, 60)], ref)
    assert not short["same_work"] and short["output_count_differs"] == 1
    assert short["output_tokens"] == 124

    # A server whose tokenizer counts the prompt otherwise.
    other = er.token_check([served(129, 128, 64), served(128, 128, 64)], ref)
    assert not other["same_work"]
    assert other["prompt_count_differs"] == 1 and other["usage_differs_from_local"] == 1

    failed = er.token_check([served(128, 128, 64), served(128, 128, 64, ok=False)], ref)
    assert failed["failed"] == 1 and not failed["same_work"]


def test_token_check_without_usage_and_with_another_count():
    ref = [served(128, 128, 64)]
    no_usage = er.token_check([served(None, 128, 64)], ref)
    assert no_usage["usage_prompt_tokens"] is None and no_usage["prompt_count_differs"] == 1
    assert no_usage["usage_differs_from_local"] == 0
    fewer = er.token_check([], ref)
    assert fewer == {"requests": 0, "reference_requests": 1, "same_work": False}


def test_agreement():
    assert er.agreement([1, 2, 3], [1, 2, 3]) == {
        "tokens": 3, "leading": 3, "same_positions": 3, "first_difference": None}
    assert er.agreement([1, 2, 3, 4], [1, 5, 3, 6]) == {
        "tokens": 4, "leading": 1, "same_positions": 2, "first_difference": 1}
    assert er.agreement([7, 8], [9, 8])["first_difference"] == 0
    # A shorter answer that agrees as far as it goes has no difference.
    assert er.agreement([1, 2, 3], [1, 2])["first_difference"] is None


def test_logit_gap():
    row = [0.0, 1.0, 2.0, 3.0]          # std = sqrt(1.25)
    g = er.logit_gap(row, 3, 2)
    assert g["gap"] == 1.0 and g["gap_over_std"] == pytest.approx(1 / np.std(row))
    assert er.logit_gap([1.0, 1.0], 0, 1) == {"gap": 0.0, "gap_over_std": None}


def test_ratio_is_above_one_where_folo_is_better():
    assert er.ratio(20.0, 10.0, True) == 2.0       # folo's tokens/s twice the other's
    assert er.ratio(50.0, 100.0, False) == 2.0     # folo's TTFT half the other's
    assert er.ratio(None, 1.0, True) is None and er.ratio(1.0, 0.0, False) is None


def summary(ttft, tpot, tok_s):
    return {"completed": 4, "failed": 0, "mean_ttft_ms": ttft, "p99_ttft_ms": ttft, "mean_tpot_ms": tpot,
            "mean_itl_ms": tpot, "output_throughput": tok_s, "request_throughput": 1.0}


def test_table_rows_order_and_ratios():
    results = {"folo": {(1, "inf"): summary(100, 50, 20), (4, "inf"): summary(200, 60, 60)},
               "vllm": {(4, "inf"): summary(400, 120, 30), (1, "inf"): summary(300, 100, 10)},
               "transformers": {(1, "offline"): summary(50, 200, 5)}}
    rows = er.table_rows(results)
    assert [(r["concurrency"], r["request_rate"], r["engine"]) for r in rows] == [
        (1, "inf", "folo"), (1, "inf", "vllm"), (1, "offline", "transformers"),
        (4, "inf", "folo"), (4, "inf", "vllm")]
    assert "folo_ratio" not in rows[0]
    assert rows[1]["folo_ratio"] == {"mean_ttft_ms": 3.0, "mean_tpot_ms": 2.0,
                                     "output_throughput": 2.0}
    # The offline row is compared with folo's run of the same requests.
    assert rows[2]["folo_ratio"] == {"mean_ttft_ms": 0.5, "mean_tpot_ms": 4.0,
                                     "output_throughput": 4.0}
    text = er.markdown_table(rows)
    assert ("| 1 | inf | vllm | 4/4 | 300.0 | 300.0 | 100.0 | 100.0 | 10.0 | 1.00 | 3.00x | 2.00x "
            "| 2.00x |") in text
    results["vllm"][(1, "inf")].update(completed=3, failed=1)
    assert "| 1 | inf | vllm | 3/4 |" in er.markdown_table(er.table_rows(results))


def serve_json(ttft, out_tokens):
    reqs = [dict(served(128, 128, n), ttft_ms=ttft) for n in out_tokens]
    return {"results": [{"request_rate": "inf", "summary": summary(ttft, 50, 20),
                         "requests": reqs}]}


def write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def test_a_run_directory_becomes_one_table(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    write(model / "config.json", {"vocab_size": 4})
    run = tmp_path / "run"
    run.mkdir()
    write(run / "run.json", {"threads": 2, "input_len": 128, "output_len": 64, "num_prompts": 2,
                             "concurrencies": [1], "request_rates": ["inf"],
                             "dataset": "random", "model": str(model), "gguf": "m.gguf",
                             "folo_commit": "abc1234"})
    write(run / "folo-c1.json", serve_json(100, [64, 64]))
    write(run / "folo-c1.load", "0.50, 0.40, 0.30")
    write(run / "folo.command", "folo serve -m model")
    write(run / "folo.version", "folo 0.1.0")
    write(run / "llamacpp-c1.json", serve_json(200, [64, 63]))
    write(run / "vllm.skip", "vllm-cpu==0.32.0 does not import")
    write(run / "greedy-prompt.json", {"ids": [5, 6]})
    write(run / "greedy-folo.json", {"ids": [1, 2, 3]})
    write(run / "greedy-llamacpp.json", {"ids": [1, 0, 3]})
    # folo's logits [prompt + continuation - 1 = 4, vocab 4]; row 2 predicts
    # continuation token 1, where llama.cpp chose 0 and folo 2.
    np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1.0, 0.0, 1.5, 0.0], [0, 0, 0, 0]],
             dtype="<f4").tofile(run / "greedy-logits.f32")
    out = tmp_path / "engines"
    er.main(["engines_report.py", str(run), str(out)])
    doc = json.loads((tmp_path / "engines.json").read_text())
    assert [r["engine"] for r in doc["rows"]] == ["folo", "llama.cpp"]
    assert doc["rows"][1]["folo_ratio"]["mean_ttft_ms"] == 2.0
    assert doc["engines"]["vllm"]["skipped"] == "vllm-cpu==0.32.0 does not import"
    assert doc["token_checks"]["llama.cpp"]["c1 rate inf"]["output_count_differs"] == 1
    assert doc["token_checks"]["folo"]["c1 rate inf"]["same_work"]
    g = doc["greedy_agreement"]["llama.cpp"]
    assert g["leading"] == 1 and g["first_difference"] == 1
    assert g["at_first_difference"]["gap"] == pytest.approx(0.5)
    text = (tmp_path / "engines.md").read_text()
    assert "**vllm**: not run: vllm-cpu==0.32.0 does not import" in text
    assert "1-min load before its runs: 0.50" in text
    assert "Loaded machine" not in text
    write(run / "folo-c1.load", "2.50, 0.40, 0.30")
    er.main(["engines_report.py", str(run), str(out)])
    assert "**Loaded machine:** the 1-minute load reached 2.50 before a run (above 1.5)" in (
        tmp_path / "engines.md").read_text()
    assert text in capsys.readouterr().out


def test_vllm_cpu_requirements_for_pypi():
    lines = ["regex", "torch==2.13.0+cpu; platform_machine == \"x86_64\"",
             "torch==2.13.0; platform_system == \"Darwin\"",
             "numba==0.65.0", "transformers<5.20.0,>=5.16.1",
             "intel-openmp==2024.2.1; platform_machine == \"x86_64\"",
             "pandas; extra == \"bench\"", "fastapi[standard]<0.137.0,>=0.133.0"]
    env = {"platform_machine": "x86_64", "platform_system": "Linux"}
    out = pypi_requirements(lines, env)
    parsed = {Requirement(r).name: Requirement(r) for r in out}
    assert sorted(parsed) == ["fastapi", "intel-openmp", "numba", "regex", "torch",
                              "transformers"]
    assert str(parsed["torch"].specifier) == "==2.13.0"
    assert str(parsed["numba"].specifier) == "==0.65.0"
    assert parsed["transformers"].specifier == Requirement("x<5.20.0,>=5.16.1").specifier
    assert parsed["fastapi"].extras == {"standard"}
    assert all(Requirement(r).marker is None for r in out)
    mac = pypi_requirements(lines, {"platform_machine": "arm64", "platform_system": "Darwin"})
    assert "torch==2.13.0" in mac and "intel-openmp==2024.2.1" not in mac


def load_transformers_runner():
    spec = importlib.util.spec_from_file_location(
        "engines_transformers", ROOT / "bench" / "engines_transformers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_transformers_records_follow_each_requests_own_length():
    """One static batch of a 3-token and a 6-token prompt asking for 2 and 5
    tokens: each request's record ends at its own last token, and every
    request of the batch shares the first token's time."""
    import torch
    from transformers import Qwen3ForCausalLM

    runner = load_transformers_runner()
    model = Qwen3ForCausalLM.from_pretrained(os.environ["FOLO_TEST_MODEL"],
                                             dtype=torch.float32).eval()
    records, wall = runner.run_batch(model, [[11, 12, 13], [21, 22, 23, 24, 25, 26]], [2, 5])
    assert [r["output_tokens"] for r in records] == [2, 5]
    assert [r["prompt_tokens"] for r in records] == [3, 6]
    assert [len(r["itl_ms"]) for r in records] == [1, 4]
    assert records[0]["ttft_ms"] == records[1]["ttft_ms"]
    assert records[0]["e2el_ms"] < records[1]["e2el_ms"] <= 1e3 * wall
    for r in records:
        assert r["e2el_ms"] - r["ttft_ms"] == pytest.approx(sum(r["itl_ms"]))
