"""`lt-lightning study` arguments: `--extra` in both spellings without swallowing later options; the report goes to
the runs folder unless published (issue 18: a partial study overwrote the committed report)."""

from __future__ import annotations

import pytest

from lt_lightning.study.cli import build_parser, main, split_extra

OPTIONS = set(build_parser()._option_string_actions) - {"--extra"}


@pytest.mark.parametrize(
    ("argv", "rest", "extra"),
    [
        (["--extra", "trainer.max_epochs=2", "--report-dir", "X"], ["--report-dir", "X"], ["--trainer.max_epochs=2"]),
        (
            ["--extra", "--trainer.max_epochs", "2", "--report-dir", "X"],
            ["--report-dir", "X"],
            ["--trainer.max_epochs=2"],
        ),
        (
            ["-c", "s.yaml", "--extra", "--a.b=1", "c.d=x", "--e", "f", "--list"],
            ["-c", "s.yaml", "--list"],
            ["--a.b=1", "--c.d=x", "--e=f"],
        ),
        (["--extra", "a=1", "--runs-dir=R", "--extra", "--b", "2"], ["--runs-dir=R"], ["--a=1", "--b=2"]),
        (["--extra", "--trainer.fast_dev_run", "--list"], ["--list"], ["--trainer.fast_dev_run"]),
        (["--extra", "--x=-1"], [], ["--x=-1"]),
    ],
)
def test_extra_takes_both_spellings_up_to_the_next_option(argv, rest, extra) -> None:
    assert split_extra(argv, OPTIONS) == (rest, extra)


def test_extra_key_without_value_is_a_clear_error(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["-c", "study.yaml", "--extra", "trainer.max_epochs", "2"])
    assert "'trainer.max_epochs' has no value: write trainer.max_epochs=VALUE or --trainer.max_epochs VALUE" in (
        capsys.readouterr().err
    )


def test_publish_and_report_dir_together_are_refused(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "ce.yaml").write_text("{}\n")
    (tmp_path / "s.yaml").write_text(
        "name: s\nmethods:\n  - {name: ce, config: ce.yaml, family: baseline}\nreport_dir: published\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["-c", "s.yaml", "--publish", "--report-dir", "X", "--list"])
    assert "give --publish (the study's report_dir) or --report-dir DIR, not both" in capsys.readouterr().err
