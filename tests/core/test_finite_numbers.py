"""cli.Finite and cli.FiniteList: the one finite-number check of every float option, and the walk that proves
each lab uses it (tests/option_walk.py, run here on core's shared options and on a group that breaks the rule)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from dla_core import cli
from tests.option_walk import NON_FINITE, walk


def convert(kind: click.ParamType, text: str):
    return kind.convert(text, None, None)


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (cli.Finite(min=0, min_open=True), "nan", "nan is not a finite number; expected a number > 0"),
        (cli.Finite(min=0, min_open=True), "0", "0 is out of range; expected a number > 0"),
        (cli.Finite(min=0), "-inf", "-inf is not a finite number; expected a number ≥ 0"),
        # float('1e999') overflows to inf
        (cli.Finite(min=0), "1e999", "1e999 is not a finite number; expected a number ≥ 0"),
        (cli.Finite(max=1, max_open=True), "1", "1 is out of range; expected a number < 1"),
        (cli.Finite(0, 2, min_open=True), "2.5", "2.5 is out of range; expected a number in (0, 2]"),
        (cli.Finite(0, 1, max_open=True), "abc", "'abc' is not a number; expected a number in [0, 1)"),
        (cli.Finite(), "inf", "inf is not a finite number; expected a finite number"),
        (
            cli.FiniteList(min=0),
            "0,NaN",
            "NaN is not a finite number; expected comma-separated finite numbers, each ≥ 0",
        ),
        (
            cli.FiniteList(0, 100),
            "50,101",
            "101 is out of range; expected comma-separated finite numbers, each in [0, 100]",
        ),
        (cli.FiniteList(), "1,,2", "'1,,2' is not a list; expected comma-separated finite numbers"),
        (cli.FiniteList(), "", "'' is not a list; expected comma-separated finite numbers"),
    ],
)
def test_a_bad_number_says_what_was_expected(kind, text, message):
    with pytest.raises(click.BadParameter) as e:
        convert(kind, text)
    assert e.value.message == message


def test_good_numbers_pass_with_their_bounds():
    assert convert(cli.Finite(0, 1), "0") == 0.0 and convert(cli.Finite(0, 1), "1") == 1.0
    assert convert(cli.Finite(min=0, min_open=True), " 1e-3 ") == 0.001
    assert convert(cli.FiniteList(min=0), "0, 0.01,0.1") == (0.0, 0.01, 0.1)
    assert convert(cli.FiniteList(min=0), (0.5, 1)) == (0.5, 1.0)  # a default given as numbers
    assert isinstance(cli.Finite(), click.FloatRange)  # --help still shows the range


@click.group()
def demo() -> None:
    """Core's shared options, as a lab uses them."""


@demo.command()
@cli.DATA_DIR
@cli.OUT
@cli.train_options(epochs_default=1, lr_default=0.1, batch_default=8)
def train(out, **opts) -> None:
    """Would make the run folder."""
    out.mkdir(parents=True)


def test_core_float_options_refuse_non_finite_numbers(tmp_path):
    # lr, momentum, weight decay, warmup, clip
    walk(cli.entry_point(demo), demo, "demo", tmp_path).check(minimum=5)


@click.group()
def careless() -> None:
    """Float options declared without cli.Finite / cli.FiniteList."""


@careless.command()
@cli.OUT
@click.option("--rate", type=click.FloatRange(min=0), default=1.0)
@click.option("--scale", default=0.5)  # click infers FLOAT from the default
@click.option("--radii", default="0,0.5")  # a list read by hand later
@click.option("--ok", type=cli.Finite(min=0), default=1.0)
def run(out, rate, scale, radii, ok) -> None:
    """Writes its folder whatever it is given."""
    out.mkdir(parents=True)


def _mkdir(ctx: click.Context, param: click.Parameter, value):
    Path(f"made-while-parsing-{len(list(Path().iterdir()))}").mkdir()  # a new folder each time
    return value


@careless.command()
@click.option("--where", type=click.Path(path_type=Path), callback=_mkdir, is_eager=True)
@click.option("--ok", type=cli.Finite(min=0), default=1.0)
def eager(where, ok) -> None:
    """Makes a folder while its options are parsed, before --ok is read."""


def test_the_walk_catches_a_float_option_without_the_finite_type(tmp_path):
    found = walk(cli.entry_point(careless), careless, "careless", tmp_path)
    assert found.options == ["eager --ok", "run --rate", "run --scale", "run --radii", "run --ok"]
    by_case = {f.split(":")[0].split(" --")[-1]: f for f in found.failures}  # 'rate=nan': its failure
    # every bad number of each option without the one type, and each folder made while parsing
    assert sorted(by_case) == sorted(f"{o}={v}" for o in ("ok", "rate", "scale", "radii") for v in NON_FINITE)
    # nan and inf reached the body (which would have made its folder); FloatRange refused -inf, in its words
    assert "the command ran" in by_case["rate=nan"] and "the command ran" in by_case["radii=inf"]
    assert '-inf is not in the range x>=0." is not the one finite-number error' in by_case["rate=-inf"]
    assert all("created ['" in by_case[f"ok={v}"] for v in NON_FINITE)  # eager --ok: the folders
    with pytest.raises(AssertionError):
        found.check(minimum=1)
    with pytest.raises(AssertionError, match="only 5 float options found"):
        walk(cli.entry_point(demo), demo, "demo", tmp_path / "again").check(minimum=6)
