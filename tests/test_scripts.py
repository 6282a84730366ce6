"""How scripts are assembled (taskmesh/scripts.py): each carries only the
library statements it reaches, and that is enough for it to run."""

from __future__ import annotations

import re

import pytest

from taskmesh import scripts
from taskmesh.scripts import LIBRARIES, LUA_DIR

SCRIPTS = sorted(p.stem for p in LUA_DIR.glob("*.lua") if p.stem not in LIBRARIES)


def test_the_libraries_top_level_is_local_statements_only():
    """The pruning splits the libraries at column-0 `local`s: anything else
    at column 0 (a global assignment, a bare call) would be glued to the
    statement before it and kept or dropped with it."""
    for lib in LIBRARIES:
        for n, line in enumerate((LUA_DIR / f"{lib}.lua").read_text().splitlines(), 1):
            assert re.match(r"(local\s|end\b|--|\s|}|$)", line), f"{lib}.lua:{n}: {line!r}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_library_name_a_script_uses_is_defined_in_what_it_carries(name):
    """Nothing it names from the libraries was pruned away: the defined
    names of the full libraries that occur in the assembled script all
    have their statement in it."""
    source = scripts.script(name).source
    cold = scripts.COLD.get(name)
    defined_everywhere = set().union(*(d for d, _, _ in scripts._statements()))
    carried = set().union(*(d for d, _, text in scripts._statements()
                            if text in source or (cold and scripts.cold_form(text, cold[1]) in source)))
    used = scripts._names(source) & defined_everywhere
    assert used <= carried, sorted(used - carried)


def test_scripts_carry_less_than_the_whole_libraries():
    whole = sum(len(text) for _, _, text in scripts._statements())
    assert len(scripts.library_for(scripts.script("renew").source)) < whole / 4
    assert "take_token" not in scripts.script("register").source  # flow control: claims only
    assert "take_token" in scripts.script("claim").source


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_compiles(rds, name):
    assert rds.script_load(scripts.script(name).source) == scripts.script(name).sha


def test_a_claim_makes_the_resolution_machinery_only_when_resolutions_are_owed():
    """claim.lua reaches resolve() (and through it mark_terminal, release,
    ...) only to continue the `resolve` list: those statements are made
    under the guard, and none of them is made unguarded."""
    source = scripts.script("claim").source
    assert "if _resolve_owed then\nresolve = function(stack)" in source
    assert "local function resolve(" not in source and "local function mark_terminal(" not in source
    assert "local function resolve_pending(" in source  # its LPOP runs at every claim
