"""The CLI's exit codes come from one table over the error tree: the user's errors exit 1 with one line,
unreadable data 3, anything else (a plain ValueError included) is a bug: 2, with the hint to debug."""

from __future__ import annotations

import pytest

from edgeminer.indexer import errors as e
from edgeminer.service import cli


def _classes() -> list[type[e.EdgeminerError]]:
    found, todo = [], [e.EdgeminerError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize(
    "exc,code,line",
    [
        (e.DatasetNotFound("nope", ["ds"]), cli.EXIT_ERROR, "edgeminer: error: dataset 'nope' does not exist"),
        (e.ValidationFailed("bins must be at least 1, not 0"), cli.EXIT_ERROR, "edgeminer: error: bins must be"),
        (e.PathOutsideRoots("source: outside the roots"), cli.EXIT_ERROR, "edgeminer: error: source: outside"),
        (e.DatasetUnreadable("ds"), cli.EXIT_UNREADABLE, "edgeminer check --dataset ds"),
        (OSError("lance error: Not found: /data/ds__samples.lance/data/x.lance"), cli.EXIT_UNREADABLE, "'ds'"),
        (ValueError("cannot reshape array"), cli.EXIT_INTERNAL, "edgeminer: internal error: ValueError"),
        (KeyError("x"), cli.EXIT_INTERNAL, "edgeminer: internal error: KeyError"),
    ],
)
def test_exit_codes(exc: Exception, code: int, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._report_error(exc) == code
    err = capsys.readouterr().err
    assert line in err and "Traceback" not in err
    assert ("EDGEMINER_DEBUG" in err) == (code == cli.EXIT_INTERNAL)


def test_every_class_of_the_tree_has_an_exit_code() -> None:
    table = cli.exit_codes()
    for cls in _classes():
        code = next((table[c] for c in cls.__mro__ if c in table), None)
        assert code is not None, cls.__name__
        if cls is not e.EdgeminerError:
            assert code != cli.EXIT_INTERNAL, f"{cls.__name__} would exit as a bug: give its branch a row"
