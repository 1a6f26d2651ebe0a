"""Every function of the Python package against the command line's `--json` on the same inputs,
errors as exceptions, score arrays, and a call that releases the GIL."""

import json
import os
import pathlib
import threading
import time

import numpy as np
import pytest

import depthprune as dp

# Wall-clock figures differ between two runs of the same work, and so do the kernel records
# (each kernel's measured GFLOP/s; a process keeps its choices, so a Python session also lists the
# kinds earlier calls chose, where a fresh CLI process lists only its own).
TIMINGS = {"seconds", "tokens_per_s", "created", "elapsed_s", "sweep_seconds", "prefill_seconds",
           "kernels"}


def strip(v, drop=TIMINGS):
    """`v` without timing keys, at any depth."""
    if isinstance(v, dict):
        return {k: strip(x, drop) for k, x in v.items() if k not in drop}
    if isinstance(v, list):
        return [strip(x, drop) for x in v]
    return v


def test_inspect_matches_cli(model, cli_json):
    assert dp.inspect(model) == cli_json("inspect", model)
    assert dp.inspect(model)["params"]["layers"][0]["attention"] > 0


def test_plan_matches_cli(model, cli_json):
    got = dp.plan(model, drop="1..3")
    assert got == cli_json("plan", model, "--drop", "1..3")
    assert got["layers"]["removed"] == [1, 2]
    kept = dp.plan(model, keep="0,3")
    assert kept["layers"] == got["layers"] and kept["method"] == {"kind": "manual", "keep": "0,3"}


def test_plan_by_strategy_matches_cli(model, text, cli_json):
    got = dp.plan(model, strategy="bi", remove=2, calib=text, ctx=16, samples=2)
    want = cli_json(
        "plan", model, "--strategy", "bi", "--remove", "2", "--calib", text, "--ctx", "16",
        "--samples", "2",
    )
    assert got == want


def test_score_matches_cli_with_numpy_arrays(model, text, cli_json):
    got = dp.score(model, metric="bi", calib=text, ctx=16, samples=2)
    want = cli_json("score", model, "--metric", "bi", "--calib", text, "--ctx", "16", "--samples", "2")
    assert isinstance(got["scores"], np.ndarray)
    assert got["scores"].dtype == np.float64 and got["scores"].shape == (4,)
    assert got["rank"].dtype == np.int64 and got["rank"].shape == (4,)
    np.testing.assert_array_equal(got["scores"], np.asarray(want["importance"]))
    assert got["rank"].tolist() == want["rank"]
    plain = {k: v for k, v in got.items() if k not in ("scores", "chosen")}
    plain["rank"] = plain["rank"].tolist()
    assert strip(plain) == strip(want)
    # The chosen set is a quarter of the layers, the ones ranked first.
    assert got["chosen"] == [int(np.argmin(got["rank"]))]


def test_score_stability_matches_cli(model, text, cli_json):
    got = dp.score(model, metric="angular", calib=text, ctx=16, samples=2, resamples=3, choose=2)
    want = cli_json(
        "score", model, "--metric", "angular", "--calib", text, "--ctx", "16", "--samples", "2",
        "--resamples", "3", "--choose", "2",
    )
    assert got["stability"] == want["stability"]
    assert len(got["chosen"]) == 2


def test_eval_matches_cli(model, text, cli_json):
    got = dp.eval(model, text=text, ctx=16, skip="1", reference=model)
    want = cli_json("eval", model, "--text", text, "--ctx", "16", "--skip", "1", "--reference", model)
    assert strip(got) == strip(want)
    assert got["divergence"]["mean_kl"] > 0


def test_run_options_belong_to_each_call(model, text):
    """Threads and precision are options of one call, not of the process (issue 25)."""
    one = dp.eval(model, text=text, ctx=16, threads=1, compute="bf16")
    two = dp.eval(model, text=text, ctx=16, threads=2, compute="f32")
    again = dp.eval(model, text=text, ctx=16)
    assert (one["threads"], one["compute"]) == (1, "bf16")
    assert (two["threads"], two["compute"]) == (min(2, os.cpu_count() or 1), "f32")
    assert again["compute"] == "f32"  # auto: the golden llama is stored in f32
    assert one["perplexity"] != two["perplexity"]
    with pytest.raises(dp.InvalidRequestError, match="`threads`"):
        dp.eval(model, text=text, ctx=16, threads=100000)


def test_eval_tasks_matches_cli(model, cli_json, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "\n".join(
            json.dumps({"context": c, "choices": ["yes", "no"], "gold": 0})
            for c in ["The sky is blue?", "Water is wet?", "Fire is cold?"]
        )
        + "\n"
    )
    got = dp.eval(model, tasks=tasks, skip="2")
    want = cli_json("eval", model, "--tasks", tasks, "--skip", "2")
    assert strip(got) == strip(want)
    assert "items" not in got
    assert len(dp.eval(model, tasks=tasks, per_item=True)["items"]) == 3


def test_eval_named_tasks_match_cli(model, cli_json):
    fixtures = pathlib.Path(model).parent.parent / "lmeval"
    arc, mmlu = fixtures / "arc_easy" / "test.jsonl", fixtures / "mmlu"
    got = dp.eval(model, tasks={"arc_easy": arc, "mmlu": mmlu})
    want = cli_json("eval", model, "--tasks", f"arc_easy={arc},mmlu={mmlu}")
    assert strip(got) == strip(want)
    assert [t["task"] for t in got["tasks"]] == ["arc_easy", "mmlu"]
    assert dp.eval(model, tasks={"mmlu": mmlu}, num_fewshot=1)["tasks"][0]["num_fewshot"] == 1
    with pytest.raises(dp.InvalidRequestError, match="confirm-run-unsafe-code"):
        dp.eval(model, tasks={"humaneval": arc})


def provenance(d):
    """A prune's provenance without what differs between two writes of the same prune."""
    return strip(d, TIMINGS | {"command", "out", "output", "path", "created_at", "tool"})


def test_prune_matches_cli(model, cli_json, tmp_path):
    got = dp.prune(model, drop="1..3", out=tmp_path / "py")
    want = cli_json("prune", model, "--drop", "1..3", "--out", tmp_path / "cli")
    assert provenance(got) == provenance(want)
    # The same files, byte for byte, but the card and provenance that name the command.
    for f in (tmp_path / "cli").iterdir():
        if f.name in ("README.md", "pruning.json"):
            continue
        assert (tmp_path / "py" / f.name).read_bytes() == f.read_bytes(), f.name
    assert got["layers"]["removed"] == [1, 2]


def test_heal_matches_cli(model, long_text, cli_json, tmp_path):
    dp.prune(model, drop="2", out=tmp_path / "pruned")
    opts = dict(calib=long_text, ctx=32, heal_samples=512, method="lstsq", holdout=0, alpha=[1e-3])
    got = dp.heal(tmp_path / "pruned", model, out=tmp_path / "py", **opts)
    want = cli_json(
        "heal", tmp_path / "pruned", "--from", model, "--out", tmp_path / "cli", "--calib",
        long_text, "--ctx", "32", "--heal-samples", "512", "--method", "lstsq", "--holdout", "0",
        "--alpha", "1e-3",
    )
    assert provenance(got) == provenance(want)
    assert got["healing"]["blocks"], got["healing"]


def test_sweep_and_report_match_cli(model, long_text, cli, cli_json, tmp_path):
    opts = dict(
        strategies=["bi", "last"], remove="0..3", calib=long_text, ctx=16, samples=2,
        eval_samples=2, eval_offset=4000, ci_resamples=50,
    )
    got = dp.sweep(model, eval=long_text, **opts)
    want = cli_json(
        "sweep", model, "--strategies", "bi,last", "--remove", "0..3", "--calib", long_text,
        "--ctx", "16", "--samples", "2", "--eval", long_text, "--eval-samples", "2",
        "--eval-offset", "4000", "--ci-resamples", "50", "--out", tmp_path / "cli",
    )
    assert strip(got) == strip(want)
    table = dp.rows(got)
    assert len(table) == len(got["rows"]) == 6
    # Without `out`, nothing is written; with it, the CLI's files are there.
    assert (tmp_path / "cli" / "sweep.csv").is_file()
    # report: the same file the command writes, from the same sweep folder.
    md = pathlib.Path(dp.report(tmp_path / "cli", max_new_tokens=4))
    first = md.read_text()
    code, out, err = cli("report", tmp_path / "cli", "--max-new-tokens", "4")
    assert code == 0, err
    assert pathlib.Path(out.strip()) == md
    assert md.read_text() == first and "| strategy |" in first


def test_generate_matches_cli(model, cli):
    pieces = []
    got = dp.generate(model, "Hello", max_new_tokens=8, ignore_eos=True,
                      callback=lambda ev, *a: pieces.append(a[0]) if ev == "text" else None)
    code, out, err = cli("generate", model, "--prompt", "Hello", "--max-new-tokens", "8", "--ignore-eos")
    assert code == 0, err
    assert got["text"] + "\n" == out
    assert "".join(pieces) == got["text"]
    assert len(got["tokens"]) == 8


def test_progress_goes_to_the_callback_or_stderr(model, text, capfd):
    events = []
    dp.eval(model, text=text, ctx=16, callback=lambda ev, *a: events.append(ev))
    assert "start" in events and "advance" in events and "finish" in events
    capfd.readouterr()
    dp.eval(model, text=text, ctx=16)
    err = capfd.readouterr().err
    assert "depthprune: eval (" in err and "done in" in err, err


def test_long_phases_report_status_with_the_time_left(model, long_text, capfd):
    statuses = []
    dp.eval(model, text=long_text, ctx=16,
            callback=lambda ev, *a: statuses.append(a) if ev == "status" else None)
    # A line at every tenth of the phase: nine at least, each with where it stands.
    assert len(statuses) >= 9, statuses
    for label, done, total, seconds, left in statuses:
        assert label == "eval" and 0 < done <= total and seconds >= 0
        assert left is None or left >= 0
    capfd.readouterr()
    dp.eval(model, text=long_text, ctx=16)
    err = capfd.readouterr().err
    assert sum("depthprune: eval " in l and " left" in l for l in err.splitlines()) >= 9, err


def cli_error(cli, *args):
    code, out, err = cli(*args)
    assert code != 0 and out == ""
    line = err.strip().splitlines()[0]
    assert line.startswith("error: ")
    return line[len("error: "):]


def test_errors_raise_with_the_cli_message(model, cli, tmp_path):
    with pytest.raises(dp.LayerSpecError) as e:
        dp.plan(model, drop="3..1")
    assert str(e.value) == cli_error(cli, "plan", model, "--drop", "3..1")

    missing = tmp_path / "nope"
    with pytest.raises(dp.Error) as e:
        dp.inspect(missing)
    assert str(e.value) == cli_error(cli, "inspect", missing)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(dp.ConfigError) as e:
        dp.inspect(broken)
    assert "broken" in str(e.value) and "\n" not in str(e.value)
    assert str(e.value) == cli_error(cli, "inspect", broken)

    # An option the CLI names as a flag is named by its keyword here.
    with pytest.raises(dp.InvalidRequestError) as e:
        dp.eval(model, text=str(pathlib.Path(model) / "config.json"), ctx=1)
    assert "`ctx`" in str(e.value)
    assert "--ctx" in cli_error(cli, "eval", model, "--text", pathlib.Path(model) / "config.json", "--ctx", "1")


def test_huge_resample_counts_raise_not_panic(model, text, cli):
    """`resamples` above the limit is an error naming the keyword (issue 26), not a panic."""
    for call in (
        lambda: dp.score(model, metric="bi", calib=text, ctx=16, samples=2, resamples=2**64 - 1),
        lambda: dp.sweep(model, strategies=["bi"], remove="0..2", calib=text, ctx=16, samples=2,
                         eval=text, resamples=2**64 - 1),
    ):
        with pytest.raises(dp.InvalidRequestError, match="`resamples` must be at most 10000"):
            call()
    line = cli_error(cli, "score", model, "--metric", "bi", "--calib", text, "--ctx", "16",
                     "--samples", "2", "--resamples", str(2**64 - 1))
    assert "--resamples" in line and "at most 10000" in line


def test_unknown_keywords_are_refused(model):
    with pytest.raises(dp.InvalidRequestError, match="`sampels`"):
        dp.score(model, metric="bi", sampels=2)
    with pytest.raises(dp.InvalidRequestError, match="metric"):
        dp.score(model, metric="cosine")
    assert issubclass(dp.InvalidRequestError, dp.Error)


def test_calls_release_the_gil(model, long_text):
    """While one thread is inside a long call, Python code keeps running in another."""
    done = threading.Event()
    span = {}

    def work():
        span["start"] = time.perf_counter()
        span["r"] = dp.eval(model, text=long_text, ctx=64)
        span["end"] = time.perf_counter()
        done.set()

    t = threading.Thread(target=work)
    ticks = []
    t.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    t.join()
    assert span["r"]["perplexity"] > 1
    length = span["end"] - span["start"]
    assert length > 0.2, length
    # The middle half of the call: with the GIL held there, this thread could not run at all.
    lo, hi = span["start"] + length / 4, span["end"] - length / 4
    inside = [x for x in ticks if lo < x < hi]
    assert len(inside) > 10, (len(inside), len(ticks), length)
