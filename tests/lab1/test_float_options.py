"""Every float option of every `lab1` command refuses nan, inf and -inf at parsing: one Error line, exit 2, no files."""

from __future__ import annotations

from tests.option_walk import walk_script


def test_every_float_option_refuses_non_finite_numbers(tmp_path):
    # the float options lab1 has today: a walk that finds fewer lost some (a type dropped, a command gone)
    walk_script("lab1", tmp_path).check(minimum=26)
