"""Sweeps: a sweep file's points planned with costcl's prediction, run on Ray or in this
process, one results.jsonl line per finished point; a rerun does only what is missing.

The acceptance sweep is 3 methods x 2 seeds of ``train`` on synthetic data (conftest's
one-conv model, 3 tasks of 1 epoch, about 0.1 s a point once torch is imported).  Ray
starts once for the module, with 2 CPUs; everything else runs without it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from costmodel import Scenario
from costmodel.estimation import estimate
from reports.sweep_results import RESULTS, read

TINY = "tinymodels:make"
BASE = f"""
[base]
model = "{TINY}"
dataset = "cifar10"
input_size = "3,16,16"
num_classes = 6
tasks = 3
epochs = 1
batch_size = 4
buffer_size = 40
holdout = 0.0
"""
SWEEP = BASE + """
[axes]
method = ["sgd", {method = "er", replay_batch = 4}, {method = "derpp", replay_batch = 4}]
seed = [0, 1]

[job]
kind = "train"
data_root = "synthetic:8"
"""
CLOCK = ("seconds", "finished_at", "ran_on")
"""A line's wall-clock and where-it-ran fields: the only ones two runs may differ in."""


@pytest.fixture(autouse=True)
def _tiny(tiny_factory):
    yield


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory, tiny_factory) -> Path:
    path = tmp_path_factory.mktemp("sweepfile") / "sweep.toml"
    path.write_text(SWEEP)
    return path


def cli(*args: str) -> int:
    """The console entry point in this process (for module fixtures, which have no capsys)."""
    from cli.main import run

    try:
        run(list(args))
    except SystemExit as e:
        return e.code or 0
    return 0


def normalized(folder: Path) -> dict[str, dict]:
    """results.jsonl by point, without the clock and where-it-ran fields."""
    lines = read(folder / RESULTS).lines
    out = {}
    for key, line in lines.items():
        line = {k: v for k, v in line.items() if k not in CLOCK}
        for task in (line.get("result") or {}).get("tasks", []):
            del task["seconds"], task["images_per_s"]
        out[key] = line
    return out


def raw_lines(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / RESULTS).read_text().splitlines()]


@pytest.fixture(scope="module")
def without_ray_run(sweep_file, tmp_path_factory) -> Path:
    """The acceptance sweep, uninterrupted, with Ray hidden as if it were not installed."""
    out = tmp_path_factory.mktemp("noray") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
        assert cli("sweep", "run", str(sweep_file), "--out", str(out)) == 0
    return out


@pytest.fixture(scope="module")
def ray_local(tiny_factory):
    """Ray on this machine with 2 CPUs, started once (its start-up takes seconds)."""
    pytest.importorskip("ray")
    import ray

    from cli.sweep_ray import start

    started = start(num_cpus=2)
    yield
    if started:
        ray.shutdown()


# -- the acceptance sweep ------------------------------------------------------------
def test_without_ray_every_point_runs_in_process_once(without_ray_run):
    lines = raw_lines(without_ray_run)
    assert len(lines) == 6 and len({d["point"] for d in lines}) == 6
    assert {d["status"] for d in lines} == {"ok"}
    assert {d["ran_on"]["engine"] for d in lines} == {"in-process"}
    assert sorted((d["scenario"]["method"], d["seed"]) for d in lines) == [
        (m, s) for m in ("derpp", "er", "sgd") for s in (0, 1)]
    for d in lines:  # the job's JSON is costcl train --json's
        assert len(d["result"]["tasks"]) == 3 and d["result"]["final"]["cil"] >= 0
        e = estimate(Scenario(**d["scenario"]))
        assert d["predicted"]["seconds"] == d["predicted"]["run_s"] == e.time.run_h * 3600 > 0
        assert d["predicted"]["step_s"] == e.time.step_s
        assert d["predicted"]["run_peak_bytes"] == e.memory.run_peak_bytes > 0
        assert d["predicted"]["run_flops"] == e.run.total_flops


def test_ray_sweep_killed_then_rerun_equals_the_uninterrupted_sweep(
        ray_local, sweep_file, without_ray_run, tmp_path, costcl, monkeypatch):
    from cli import sweep_store

    out = tmp_path / "ray"
    real_append = sweep_store.ResultStore.append
    appended: list[str] = []

    def append_then_ctrl_c(self, line):  # Ctrl-C once two points are on disk
        real_append(self, line)
        appended.append(line["point"])
        if len(appended) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(sweep_store.ResultStore, "append", append_then_ctrl_c)
    r = costcl("sweep", "run", str(sweep_file), "--out", str(out))
    assert r.returncode == 130 and "2 of 6 points are in" in r.stderr, r.stderr
    assert [d["point"] for d in raw_lines(out)] == appended
    monkeypatch.undo()

    r = costcl("sweep", "run", str(sweep_file), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "4 ran (ray)" in r.stdout and "2 were done before" in r.stdout, r.stdout
    lines = raw_lines(out)
    assert len(lines) == 6 and len({d["point"] for d in lines}) == 6  # each point exactly once
    assert {d["ran_on"]["engine"] for d in lines} == {"ray"}
    assert all(d["ran_on"]["node_id"] for d in lines)
    assert normalized(out) == normalized(without_ray_run)  # Ray or not, stopped or not: same


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_then_rerun_equals_the_uninterrupted_sweep(
        sweep_file, without_ray_run, tmp_path, tiny_factory):
    """The real thing: `costcl sweep run` in its own process (its own local Ray), killed with
    SIGKILL once results.jsonl holds a line, then run again."""
    import os
    import signal
    import subprocess
    import time

    pytest.importorskip("ray")
    factory = next(p for p in sys.path if (Path(p) / f"{tiny_factory}.py").exists())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([factory, os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "cli.main", "sweep", "run", str(sweep_file), "--out", str(out)]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(command, env=env, cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (out / RESULTS).exists() or not (out / RESULTS).stat().st_size:
        assert proc.poll() is None and time.monotonic() < deadline, "no result before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= len(read(out / RESULTS).lines) < 6
    r = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = raw_lines(out)
    assert len(lines) == 6 and len({d["point"] for d in lines}) == 6
    assert normalized(out) == normalized(without_ray_run)


def test_a_torn_last_line_is_cut_and_its_point_runs_again(sweep_file, without_ray_run, tmp_path,
                                                          costcl):
    out = tmp_path / "torn"
    out.mkdir()
    text = (without_ray_run / RESULTS).read_text().splitlines(keepends=True)
    (out / RESULTS).write_text("".join(text[:2]) + text[2][: len(text[2]) // 2])  # a crash mid-write
    assert len(read(out / RESULTS).lines) == 2 and read(out / RESULTS).torn_bytes > 0
    r = costcl("sweep", "run", str(sweep_file), "--out", str(out), "--in-process")
    assert r.returncode == 0, r.stderr
    assert "4 ran (in-process)" in r.stdout and "2 were done before" in r.stdout
    lines = raw_lines(out)  # every line parses: the half line is gone
    assert len(lines) == 6 and len({d["point"] for d in lines}) == 6
    assert normalized(out) == normalized(without_ray_run)


# -- planning ------------------------------------------------------------------------
def test_plan_lists_each_point_with_its_prediction(sweep_file, costcl):
    from cli.sweep import PROCESS_BYTES

    r = costcl("sweep", "plan", str(sweep_file), "--json")
    assert r.returncode == 0, r.stderr
    points = json.loads(r.stdout)["points"]
    assert [p["index"] for p in points] == [1, 2, 3, 4, 5, 6]
    assert len({p["point"] for p in points}) == 6
    er = [p for p in points if p["scenario"]["method"] == "er"]
    assert [p["coordinates"]["seed"] for p in er] == [0, 1]
    assert er[0]["scenario"]["replay_batch"] == 4 and er[0]["scenario"]["impl"] == "mammoth"
    for p in points:
        e = estimate(Scenario(**p["scenario"]))
        assert p["predicted"]["peak_bytes"] == e.memory.peak_bytes
        assert p["predicted"]["step_flops"] == e.step.forward_flops + e.step.backward_flops
        assert p["resources"] == {"cpus": 1, "gpus": 0.0,
                                  "memory_bytes": PROCESS_BYTES + e.memory.run_peak_bytes}
        assert p["refused"] is None
    table = costcl("sweep", "plan", str(sweep_file))
    assert table.returncode == 0 and "6 points, train job" in table.stdout
    assert [x.split("│")[1].strip() for x in table.stdout.splitlines()
            if x.startswith("│ ") and x.split("│")[1].strip()] == ["1", "2", "3", "4", "5", "6"]
    assert "no time model" in table.stdout


def test_a_cold_plan_traces_on_every_core_and_answers_as_without_cache(sweep_file, costcl,
                                                                      tmp_path, monkeypatch):
    """The scenarios missing from the cache are estimated in forked workers first; the plan
    is the one computed with no cache at all."""
    from cli import sweep_prewarm

    calls = []
    real = sweep_prewarm.prewarm
    monkeypatch.setattr(sweep_prewarm, "prewarm", lambda scenarios, progress=None: calls.append(
        real(scenarios, progress, workers=2)))
    monkeypatch.setenv("COSTCL_NO_CACHE", "1")
    without = costcl("sweep", "plan", str(sweep_file), "--json")
    assert without.returncode == 0, without.stderr
    monkeypatch.delenv("COSTCL_NO_CACHE")
    monkeypatch.setenv("COSTCL_CACHE_DIR", str(tmp_path / "cold"))
    cold = costcl("sweep", "plan", str(sweep_file), "--json")
    warm = costcl("sweep", "plan", str(sweep_file), "--json")
    assert cold.returncode == warm.returncode == 0, cold.stderr
    assert calls == [0, 3, 0]  # cache off; 3 methods x 2 seeds = 3 scenarios; all cached
    assert json.loads(cold.stdout) == json.loads(without.stdout) == json.loads(warm.stdout)


def test_points_that_cannot_fit_their_device_are_refused_not_run(tmp_path, costcl):
    f = tmp_path / "fit.toml"
    f.write_text(BASE + '[axes]\nmethod = ["sgd", {method = "er", replay_batch = 4}]\n'
                 '[job]\nkind = "train"\ndata_root = "synthetic:8"\n'
                 "[device_memory_mib]\ncpu = 0.2\n")  # sgd's run needs 0.12 MiB, er's 0.37
    plan = json.loads(costcl("sweep", "plan", str(f), "--json").stdout)
    assert [p["refused"] for p in plan["points"]][0] is None and plan["refused"] == 1
    assert "needs 0.4 MiB on cpu, which holds 0 MiB" in plan["points"][1]["refused"]
    r = costcl("sweep", "run", str(f), "--out", str(tmp_path / "out"), "--in-process")
    assert r.returncode == 0 and "refused point 2 (method=er(replay_batch=4))" in r.stdout
    assert [d["scenario"]["method"] for d in raw_lines(tmp_path / "out")] == ["sgd"]


def test_a_validate_sweep_measures_what_was_predicted_and_draws_it(tmp_path, costcl):
    f = tmp_path / "validate.toml"
    f.write_text(BASE + '[axes]\nmethod = ["sgd", {method = "er", replay_batch = 4}]\n'
                 '[job]\nkind = "validate"\nsteps = 1\n')
    out = tmp_path / "out"
    r = costcl("sweep", "run", str(f), "--out", str(out), "--in-process")
    assert r.returncode == 0 and "2 ran (in-process)" in r.stdout, r.stdout + r.stderr
    for d in raw_lines(out):  # the plain CPU run, measured by the profiler: the prediction
        assert d["measured"]["peak_bytes"] == d["result"]["compared_peak_bytes"] > 0
        assert d["measured"]["step_flops"] == d["predicted"]["step_flops"] > 0
    r = costcl("report", "--sweep", str(out), "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    assert "![Predicted against measured](validation.png)" in md
    assert (tmp_path / "report" / "validation.png").stat().st_size > 10_000


# -- failures are results ------------------------------------------------------------
def test_a_failing_point_is_recorded_with_its_reason_and_the_sweep_goes_on(tmp_path, costcl):
    f = tmp_path / "bad_data.toml"
    f.write_text(BASE + '[axes]\nseed = [0, 1]\n[job]\nkind = "train"\n'
                 f'data_root = "{tmp_path / "no-such-folder"}"\n')
    out = tmp_path / "out"
    r = costcl("sweep", "run", str(f), "--out", str(out), "--in-process")
    assert r.returncode == 0 and "2 failed" in r.stdout, r.stdout + r.stderr
    lines = raw_lines(out)
    assert [d["status"] for d in lines] == ["failed", "failed"]
    assert all("no-such-folder' does not exist" in d["error"] and "\n" not in d["error"]
               and d["result"] is None for d in lines)
    again = costcl("sweep", "run", str(f), "--out", str(out), "--in-process")
    assert "2 were done before" in again.stdout and len(raw_lines(out)) == 2
    retried = costcl("sweep", "run", str(f), "--out", str(out), "--in-process", "--retry-failed")
    assert "2 failed" in retried.stdout
    assert len(raw_lines(out)) == 4 and len(read(out / RESULTS).lines) == 2  # the newer wins


# -- bad input: one line, exit 2, nothing run, nothing written -----------------------------
JOB = '[job]\nkind = "train"\ndata_root = "synthetic:8"\n'
BAD = {
    "unknown-axis": (BASE + '[axes]\nmethods = ["sgd"]\n' + JOB, "unknown axis in bad.toml: 'methods'; did you mean method"),
    "empty-axis": (BASE + "[axes]\nmethod = []\n" + JOB, "axis method is empty"),
    "axis-not-list": (BASE + '[axes]\nmethod = "sgd"\n' + JOB, 'method = ["sgd"]'),
    "cannot-train": (BASE + '[axes]\nmethod = ["sgd", {method = "pnn", setting = "task-il"}]\n' + JOB,
                     ("point 2 (method=pnn(setting=task-il)): a train job runs",
                      "'pnn' is costed and validated (costcl validate) but not trained here")),
    "train-needs-own-step": (BASE.replace("buffer_size = 40", "") + '[axes]\nmethod = ["icarl"]\n' + JOB,
                             'impl = "costcl" in a file'),
    "not-toml": (BASE + "[axes\nmethod = \n", "is not valid TOML"),
    "no-job": (BASE + '[axes]\nmethod = ["sgd"]\n', "has no [job]"),
    "job-kind": (BASE + '[job]\nkind = "trian"\n', "did you mean train"),
    "job-option": (BASE + '[job]\nkind = "train"\nsteps = 3\n', "option of a train job"),
    "unknown-table": (BASE + '[axis]\nmethod = ["sgd"]\n' + JOB, "did you mean axes"),
    "repeated-point": (BASE + "[axes]\nseed = [0, 0]\n" + JOB, "points 1 and 2 are the same"),
    "bad-value": (BASE + "[axes]\nbatch_size = [4, 0]\n" + JOB, "point 2 (batch_size=0)"),
    "budget-and-buffer": (BASE + "[axes]\nbudget_mib = [1]\n" + JOB, "not both"),
    "base-key": (BASE.replace("holdout", "hold_out") + JOB, "key in [base] of bad.toml"),
    "memory-device": (BASE + JOB + "[device_memory_mib]\ntpu = 5\n", "unknown device"),
}


@pytest.fixture
def nothing_runs(monkeypatch):
    import cli.sweep_jobs

    def refuse(payload):
        raise AssertionError("a point ran before the input was refused")
    monkeypatch.setattr(cli.sweep_jobs, "run_point", refuse)


def one_line_exit_2(r, fragments: str | tuple[str, ...]) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("costcl: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for fragment in (fragments,) if isinstance(fragments, str) else fragments:
        assert fragment in lines[0], lines[0]
    assert r.stdout == ""


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweep_files_are_one_line_before_any_point(case, costcl, tmp_path, monkeypatch,
                                                       nothing_runs):
    text, fragment = BAD[case]
    f = tmp_path / "bad.toml"
    f.write_text(text)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for command in (["plan", str(f)], ["run", str(f), "--out", "out"]):
        one_line_exit_2(costcl("sweep", *command), fragment)
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("args,fragment", [
    (["--out", "file.txt"], "is a file"),
    (["--out", "out", "--in-process", "--address", "auto"], "two places"),
    ([], "Missing option '--out'"),
], ids=["out-is-a-file", "two-engines", "no-out"])
def test_bad_run_flags_are_one_line(args, fragment, sweep_file, costcl, tmp_path, monkeypatch,
                                    nothing_runs):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("mine")
    one_line_exit_2(costcl("sweep", "run", str(sweep_file), *args), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_a_second_run_on_the_same_folder_is_refused(sweep_file, costcl, tmp_path, nothing_runs):
    from cli.sweep_store import ResultStore

    with ResultStore(tmp_path / "out"):
        r = costcl("sweep", "run", str(sweep_file), "--out", str(tmp_path / "out"), "--in-process")
    one_line_exit_2(r, "another `costcl sweep run` is writing")


# -- reading results -------------------------------------------------------------------
def test_the_reader_skips_torn_and_foreign_lines_and_keeps_the_newest(tmp_path):
    path = tmp_path / RESULTS
    path.write_text('{"point": "a", "status": "failed"}\nnot json\n[1]\n'
                    '{"point": "b", "status": "ok"}\n{"point": "a", "status": "ok"}\n{"point": "c"')
    r = read(path)
    assert {k: v["status"] for k, v in r.lines.items()} == {"a": "ok", "b": "ok"}
    assert r.bad_lines == 2 and r.torn_bytes == len('{"point": "c"')
    assert r.complete_bytes == len(path.read_bytes()) - r.torn_bytes


# -- the report ------------------------------------------------------------------------
def test_report_draws_the_sweep(without_ray_run, costcl, tmp_path):
    out = tmp_path / "report"
    r = costcl("report", "--sweep", str(without_ray_run), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert {"index.html", "report.md", "accuracy.png", "time.png"} <= {p.name for p in out.iterdir()}
    md = (out / "report.md").read_text()
    assert "## Accuracy against memory" in md and "## Measured time against predicted FLOPs" in md
    assert "No point of this sweep measured memory or FLOPs" in md  # train on the CPU measures none
    rows = [x for x in md.splitlines() if x.startswith("| ") and " train | ok |" in x]
    assert len(rows) == 6
    for method in ("sgd", "er(replay_batch=4)", "derpp(replay_batch=4)"):
        assert f"| method={method} | 2 |" in md  # one accuracy group per method, 2 seeds
    bad = costcl("report", "--sweep", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2"))
    one_line_exit_2(bad, "is not a folder")
