"""What a new user stumbled on in the CLI (issue 13): distances printed as 0.0000, analyze's progress
skipping a step, unknown classes / clusters answered with "no rows match", a silent `stats --errors`,
and `--json | head` ending in an internal BrokenPipeError. Real datasets in a real store."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from factories import make_synthetic

from edgeminer.indexer.store import Store
from edgeminer.service.cli import main


def _args(store: Store, *rest: str) -> list[str]:
    return ["--data-dir", store.uri, *rest]


def test_mine_prints_small_distances_with_their_digits(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    make_synthetic(store, noise=0.001)  # near-duplicates: cosine distances around 1e-5
    assert main(_args(store, "mine", "--dataset", "synth", "--ids", "c1-000", "--budget", "5", "--no-record")) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(n for n, line in enumerate(lines) if line.split()[:3] == ["rank", "id", "distance"])
    distances = [line.split()[2] for line in lines[start + 1 : start + 6]]
    assert all(d != "0.0000" for d in distances), distances
    assert all(1e-8 < float(d) < 1e-3 for d in distances), distances
    assert any("e-" in d for d in distances), distances  # printed with its significant digits


def test_mine_uncertain_share_on_the_cli(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    make_synthetic(store, error_clusters=(0, 3), n_clusters=6)
    base = ["mine", "--dataset", "synth", "--failures", "--budget", "6", "--no-record", "--diversity", "badge"]
    assert main(_args(store, *base, "--uncertain-share", "0.5")) == 0
    out = capsys.readouterr().out
    assert "then 3 rows by margin (--uncertain-share 0.5)" in out
    assert main(_args(store, *base, "--uncertain-share", "2")) == 1
    assert "--uncertain-share is a share of the budget between 0 and 1, not 2" in capsys.readouterr().err


def test_mine_mode_weighting_on_the_cli(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """``--mode-weighting size``: each failure mode's share follows its seed count (share_budget of the
    sizes); an unknown weighting is refused by name."""
    import json

    from edgeminer.service.mining.aggregation import share_budget

    make_synthetic(store, error_clusters=(0, 3), n_clusters=6)
    base = ["mine", "--dataset", "synth", "--failures", "--budget", "20", "--no-record", "--json"]
    assert main(_args(store, *base, "--mode-weighting", "size")) == 0
    modes = json.loads(capsys.readouterr().out)["modes"]
    assert len(modes) >= 2
    assert [m["share"] for m in modes] == share_budget([float(m["size"]) for m in modes], 20)
    with pytest.raises(SystemExit):
        main(_args(store, *base, "--mode-weighting", "accuracy"))
    assert "invalid choice: 'accuracy'" in capsys.readouterr().err


def test_analyze_steps_are_continuous_and_selectors_name_what_is_valid(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    make_synthetic(store)
    assert main(_args(store, "analyze", "--dataset", "synth", "--n-epochs", "30", "--min-cluster-size", "15")) == 0
    err = capsys.readouterr().err
    steps = [(int(a), int(b)) for a, b in re.findall(r"\[(\d+)/(\d+)\]", err)]
    total = steps[-1][1]
    assert sorted({a for a, _ in steps}) == list(range(total + 1)), steps  # 0, 1, 2 ... total: none skipped
    assert {b for _, b in steps} == {total}

    assert main(_args(store, "mine", "--dataset", "synth", "--cluster", "99", "--budget", "5")) == 1
    err = capsys.readouterr().err
    assert "no cluster 99: the valid cluster ids are" in err
    ids = re.search(r"valid cluster ids are ([-\d, ]+)", err)
    assert ids is not None
    listed = {int(v) for v in ids.group(1).split(",")}
    have = {int(c) for c in store.query("synth", columns=["cluster"])["cluster"].to_pylist() if c is not None}
    assert listed == have and 99 not in listed


def test_confusion_with_an_unknown_class_names_it_and_lists_the_classes(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    make_synthetic(store, error_clusters=())  # the model is never wrong: no label X predicted as Y != X
    assert main(_args(store, "mine", "--dataset", "synth", "--confusion", "cta:dog", "--budget", "5")) == 1
    err = capsys.readouterr().err
    assert "unknown class 'cta': the dataset's classes are cat, dog, bird" in err
    assert "no rows match" not in err
    # known classes that never occur together still say so
    assert main(_args(store, "mine", "--dataset", "synth", "--confusion", "cat:dog", "--budget", "5")) == 1
    assert "no rows match the seed selector" in capsys.readouterr().err


def test_stats_errors_says_when_there_are_none(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    make_synthetic(store)
    assert main(_args(store, "stats", "--dataset", "synth", "--errors")) == 0
    assert "no rows with status=error" in capsys.readouterr().out


def test_json_into_a_closed_pipe_ends_quietly(store: Store, tmp_path: Path) -> None:
    make_synthetic(store)
    cmd = [sys.executable, "-m", "edgeminer.service.cli", *_args(store, "stats", "--dataset", "synth", "--json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head -0`: the reader is gone before anything is written
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert "BrokenPipe" not in err and "internal error" not in err and "Exception ignored" not in err, err
    assert code == 141
