"""`lmlab fanout`: a pipeline's stale stages side by side, then committed as `dvc repro` would have (real DVC)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.helpers.project import dvc, env

# Each stage writes its output from its params; `a` and `b` each wait for the other to have started, so they
# pass only if they run at once (no timing assertion: a barrier, with a timeout that fails the stage).
STAGE = """import pathlib, sys, time, yaml
name, partner = sys.argv[1], sys.argv[2]
pathlib.Path(f"started-{name}").write_text("")
deadline = time.monotonic() + 60
while partner != "-" and not pathlib.Path(f"started-{partner}").exists():
    if time.monotonic() > deadline:
        sys.exit(f"{partner} never started beside {name}")
    time.sleep(0.05)
if name == "edits":
    pathlib.Path("code.py").write_text("changed while it ran\\n")
if name == "rewrites":  # its own command in dvc.yaml
    spec = yaml.safe_load(open("dvc.yaml"))
    spec["stages"][name]["cmd"] += " again"
    pathlib.Path("dvc.yaml").write_text(yaml.safe_dump(spec))
value = yaml.safe_load(open("params.yaml"))["value"]
pathlib.Path(f"out-{name}.txt").write_text(f"{name} {value}\\n")
"""


def pipeline(root: Path, stages: dict[str, str]) -> None:
    """A git + DVC repository whose stages run stage.py; `report` reads every other stage's output."""
    root.mkdir()
    (root / "stage.py").write_text(STAGE)
    (root / "code.py").write_text("the stages' code\n")
    (root / "params.yaml").write_text("value: 1\n")
    spec = {
        name: {
            "cmd": f"{sys.executable} stage.py {name} {partner}",
            "deps": ["stage.py", "code.py"],
            "params": ["value"],
            "outs": [f"out-{name}.txt"],
        }
        for name, partner in stages.items()
    }
    spec["report"] = {"cmd": "cat out-*.txt > report.txt", "deps": [f"out-{name}.txt" for name in stages]}
    spec["report"]["outs"] = ["report.txt"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": spec}))
    for command in (["git", "init", "-q"], [str(Path(sys.executable).parent / "dvc"), "init", "-q"]):
        subprocess.run(command, cwd=root, check=True, env=env())


def fanout(root: Path, *args: str, files: tuple[str, ...] = ("dvc.yaml",)) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmlab", "fanout", *files, *args],
        cwd=root,
        env=env(),
        capture_output=True,
        text=True,
    )


def test_stages_run_side_by_side_and_are_committed_as_dvc_repro_would(tmp_path: Path) -> None:
    """a and b only pass side by side; the report, downstream of all three, runs once they are committed."""
    root = tmp_path / "project"
    pipeline(root, {"a": "b", "b": "a", "c": "-"})
    result = fanout(root, "-j", "2")
    assert result.returncode == 0, result.stderr
    assert "4 stale stages" in result.stderr and "left for" not in result.stderr
    assert "Updating lock file" not in result.stdout + result.stderr  # fanout says what it committed, once
    assert (root / "out-a.txt").read_text() == "a 1\n"
    assert (root / "report.txt").read_text().splitlines() == ["a 1", "b 1", "c 1"]
    assert dvc("status", "--json", cwd=root).stdout.strip() == "{}"  # all recorded as dvc repro would have
    repro = dvc("repro", cwd=root)
    assert repro.returncode == 0 and "Running stage" not in repro.stdout
    # a param every run reads: the runs are stale, the report (its deps unchanged until they rerun) is not, yet
    # it runs after them, as `dvc repro` would run it
    (root / "params.yaml").write_text("value: 2\n")
    again = fanout(root, "-j", "2", "--only", "[ab],c,report")  # a pattern of stage names, and groups
    assert again.returncode == 0 and "4 stale stages" in again.stderr, again.stderr
    assert (root / "report.txt").read_text().splitlines() == ["a 2", "b 2", "c 2"]
    assert dvc("status", "--json", cwd=root).stdout.strip() == "{}"


def test_the_stages_of_several_pipeline_files_run_side_by_side_the_first_file_first(tmp_path: Path) -> None:
    """Two studies at once: the second file's stage starts as soon as a job is free, so both cores stay busy
    through the first file's last stage; each is committed into its own lock file."""
    root = tmp_path / "project"
    pipeline(root, {"a": "d", "c": "-"})
    (root / "study").mkdir()
    study = {"cmd": f"{sys.executable} stage.py d a", "wdir": "..", "deps": ["stage.py"], "params": ["value"]}
    study["outs"] = ["out-d.txt"]
    (root / "study/dvc.yaml").write_text(yaml.safe_dump({"stages": {"d": study}}))
    listed = fanout(root, "--hand-out", files=("study/dvc.yaml", "dvc.yaml"))  # the files' order is the queue's
    assert listed.returncode == 0, listed.stderr
    assert [line.rsplit(" ", 2)[1] for line in listed.stdout.splitlines()] == ["d", "a", "c"]
    assert "1 wait for them" in listed.stderr  # the report: listed once a and c are committed
    result = fanout(root, "-j", "2", files=("dvc.yaml", "study/dvc.yaml"))
    assert result.returncode == 0, result.stderr
    assert "4 stale stages of dvc.yaml, study/dvc.yaml" in result.stderr  # a and c, then d (the report waits)
    assert (root / "out-d.txt").read_text() == "d 1\n" and (root / "report.txt").is_file()
    assert dvc("status", "--json", "dvc.yaml", "study/dvc.yaml", cwd=root).stdout.strip() == "{}"
    assert "d:" in (root / "study/dvc.lock").read_text()


def test_a_stage_whose_code_changed_while_it_ran_is_not_committed(tmp_path: Path) -> None:
    root = tmp_path / "project"
    pipeline(root, {"edits": "-", "c": "-", "rewrites": "-"})
    result = fanout(root, "-j", "1")
    assert result.returncode == 1
    assert "not committed  edits: code.py changed while it ran" in result.stderr
    assert "not committed  rewrites: its command in dvc.yaml changed while it ran" in result.stderr
    assert "done    c in" in result.stderr
    assert "not run report: edits, rewrites upstream of it did not end committed" in result.stderr
    assert not (root / "report.txt").exists()
    assert '"edits"' in dvc("status", "--json", cwd=root).stdout  # dvc repro runs it again


def test_a_stage_recorded_with_other_deps_is_committed_when_it_runs_again(tmp_path: Path) -> None:
    """A dep its lock entry does not hold (the code split into files since it last ran): hashed alike at hand-out
    and at commit, so the run is recorded, not refused as "changed while it ran"."""
    root = tmp_path / "project"
    pipeline(root, {"c": "-"})
    assert fanout(root).returncode == 0
    (root / "helper.py").write_text("code split out of code.py\n")
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    spec["stages"]["c"]["deps"].append("helper.py")
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec))
    result = fanout(root, "--only", "c")
    assert result.returncode == 0 and "done    c in" in result.stderr, result.stderr
    assert dvc("status", "--json", cwd=root).stdout.strip() == "{}"


def test_a_stage_that_writes_no_output_fails_and_the_others_go_on(tmp_path: Path) -> None:
    root = tmp_path / "project"
    pipeline(root, {"a": "-", "c": "-"})
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    spec["stages"]["a"]["cmd"] = "true"  # ends well, writes nothing: DVC refuses to commit it
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec))
    result = fanout(root, "-j", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "failed  a: " in result.stderr and "done    c in" in result.stderr
    assert "not run report: a upstream of it did not end committed" in result.stderr
    assert not list((root / ".dvc/tmp/fanout").glob("*.json"))  # no note left that `--commit` would record


def test_handed_out_stages_run_elsewhere_then_commit(tmp_path: Path) -> None:
    """--hand-out gives one shell line per stage (what an array job runs); --commit records those that finished."""
    root = tmp_path / "project"
    pipeline(root, {"a": "-", "b": "-"})
    listed = fanout(root, "--hand-out", "--only", "a,b")
    assert listed.returncode == 0, listed.stderr
    assert "2 stages handed out" in listed.stderr and "wait" not in listed.stderr  # the report: not in a,b
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and all(line.endswith(("stage.py a -", "stage.py b -")) for line in lines)
    subprocess.run(["bash", "-c", lines[0]], cwd=root, check=True)  # one finished, the other not yet
    first = fanout(root, "--commit")
    assert first.returncode == 1 and "committed  a\n" in first.stderr and "not finished" in first.stderr
    subprocess.run(["bash", "-c", lines[1]], cwd=root, check=True)
    second = fanout(root, "--commit")
    assert second.returncode == 0 and "1 of 1 handed-out stages committed" in second.stderr
    assert '"a"' not in dvc("status", "--json", cwd=root).stdout
    wrong = fanout(root, "--only", "nope")
    assert wrong.returncode == 2 and "no stage group nope in dvc.yaml (nor a stage name" in wrong.stderr
    outside = fanout(root, files=("dvc.yaml", str(tmp_path / "elsewhere/dvc.yaml")))
    assert (
        outside.returncode == 2 and f"{tmp_path / 'elsewhere/dvc.yaml'} is outside the DVC repository" in outside.stderr
    )


def test_a_dvc_command_typed_beside_it_delays_a_commit_but_does_not_fail_it(tmp_path: Path) -> None:
    """The repository's lock held past DVC's own 3 s retries (a `dvc status` of a study takes about that) while a
    stage finishes: fanout waits for it, then commits."""
    from dvc.repo import Repo

    root = tmp_path / "project"
    pipeline(root, {"a": "go"})  # a waits for started-go
    running = subprocess.Popen(
        [sys.executable, "-m", "lmlab", "fanout", "dvc.yaml", "--only", "a"],
        cwd=root, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (root / "started-a").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with Repo(str(root)) as repo, repo.lock:
            (root / "started-go").write_text("")  # a ends now, and fanout's commit finds the lock held
            time.sleep(8)  # DVC alone gives up after 3 s
        _, stderr = running.communicate(timeout=120)
    finally:
        running.kill()
    assert running.returncode == 0 and "done    a in" in stderr, stderr
    assert "waiting for the repository's lock" in stderr
    assert '"a"' not in dvc("status", "--json", cwd=root).stdout


def test_a_handed_out_stage_that_fails_leaves_no_old_output_for_commit_to_record(tmp_path: Path) -> None:
    """Handing a stage out removes its outputs, as `dvc repro` does before it runs one: the previous run's are not
    there to be recorded under the new deps when the new command fails."""
    root = tmp_path / "project"
    pipeline(root, {"a": "-"})
    assert fanout(root, "--only", "a").returncode == 0 and (root / "out-a.txt").read_text() == "a 1\n"
    (root / "params.yaml").write_text("value: 2\n")
    listed = fanout(root, "--hand-out", "--only", "a")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 1, listed.stderr
    assert not (root / "out-a.txt").exists()
    failed = fanout(root, "--commit")  # its task failed before writing: nothing to record
    assert failed.returncode == 1 and "not finished" in failed.stderr, failed.stderr
    assert '"a"' in dvc("status", "--json", cwd=root).stdout


def test_list_shows_the_stale_stages_and_changes_nothing(tmp_path: Path) -> None:
    """--list is a preview: it removes no output and notes no stage (--hand-out does both), so a --commit after it
    has nothing to record and says how stages are handed out."""
    root = tmp_path / "project"
    pipeline(root, {"a": "-", "b": "-"})
    assert fanout(root, "--only", "a").returncode == 0 and (root / "out-a.txt").read_text() == "a 1\n"
    (root / "params.yaml").write_text("value: 2\n")
    listed = fanout(root, "--list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].endswith("stage.py a -") and lines[1].endswith("stage.py b -") and lines[2].endswith("report.txt")
    assert "3 stale stages of dvc.yaml (nothing run, nothing changed)" in listed.stderr
    assert (root / "out-a.txt").read_text() == "a 1\n" and not list((root / ".dvc/tmp/fanout").glob("*.json"))
    nothing = fanout(root, "--commit")
    assert nothing.returncode == 1 and "no stage of dvc.yaml is handed out: `lmlab fanout --hand-out`" in nothing.stderr
