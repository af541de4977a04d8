"""Mutation testing of numanet's core modules: ``make mutate`` (not run in CI).

mutmut 3 does the work: it puts each deliberate bug into a copy of the code under
``mutants/``, records which tests call each function, and runs every mutant against those
tests only (fastest first, stopping at the first failure). Its settings are ``[tool.mutmut]``
in pyproject.toml. This driver adds what ``mutmut run`` lacks:

- ``MODULES`` below: the modules mutated and, for each, the unit tests that cover it. A
  mutant runs only against the tests of its own module that call its function (never the
  OVS/VPP end-to-end tests), so a run stays in minutes and a bug only an agent-level test
  would notice counts as not caught.

- The bugs counted are the ones issue #17 measures: flipped comparisons and arithmetic,
  ``and``/``or`` swapped, numbers +1, ``True``/``False`` swapped, ``not`` dropped,
  ``is``/``in`` flipped, ternary arms forced, assignments of ``None``, a ``match`` case
  dropped, and three operators mutmut does not have: an ``if`` condition negated, a
  ``raise`` removed, an early ``return`` removed. mutmut's string mutants ("XX" around a
  literal, upper/lower case) and its argument-dropping mutants are left out: in these
  modules nearly all of them change the wording of an error message, which no test should
  pin word for word.
- A fresh run each time (``mutants/`` is removed first): mutmut's cache does not notice
  changed tests.
- The score per module and every survivor with its diff; exit status 1 when a module
  scores under ``--min`` per cent.

mutmut mutates the code of functions and methods only: not module-level constants
(``_MAX_ARGS``, ``MAX_CONFIG_BYTES``, ``_MAX_EXACT_GROUPS``, ``MAX_DEVICE_ID``, ``MAX_CPUS``:
the boundary tests pin those, one below, at and one above) and not ``@property`` methods
(slots.py has nothing else: tests/deviceplugin/test_slots.py pins them).

    .venv/bin/python tools/mutate.py [--jobs N] [--min 90] [MUTANT_GLOB ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import libcst as cst

ROOT = Path(__file__).resolve().parent.parent

# module -> the tests that cover it (node ID prefixes under the repository root)
MODULES: dict[str, tuple[str, ...]] = {
    "deviceplugin/preferred.py": ("tests/deviceplugin/test_preferred",),
    "deviceplugin/naming.py": ("tests/deviceplugin/test_naming", "tests/deviceplugin/test_pools",
                               "tests/agent/test_config"),
    "deviceplugin/allocate.py": ("tests/deviceplugin/test_allocate",),
    "deviceplugin/pools.py": ("tests/deviceplugin/test_pools",),
    "deviceplugin/slots.py": ("tests/deviceplugin/test_slots", "tests/deviceplugin/test_pools",
                              "tests/deviceplugin/test_allocate"),
    "cni/request.py": ("tests/cni/test_request",),
    "cni/netconf.py": ("tests/cni/test_netconf",),
    "cni/result.py": ("tests/cni/test_result", "tests/cni/test_attachment_parts"),
    "numa/cpus.py": ("tests/numa/",),
    "numa/pci.py": ("tests/numa/",),
    "numa/nodes.py": ("tests/numa/",),
    "dra/slices.py": ("tests/dra/test_slices",),
}


def _module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _test_files() -> list[str]:
    """Every test file some module names: the one pytest selection for all mutants."""
    files: set[str] = set()
    for prefixes in MODULES.values():
        for prefix in prefixes:
            directory, _, stem = prefix.rpartition("/")
            files.update(str(p.relative_to(ROOT)) for p in (ROOT / directory).glob(f"{stem}*.py")
                         if p.name.startswith("test_"))
    return sorted(files)


def _configure() -> None:
    """Which files mutmut mutates and which tests it runs, from ``MODULES``."""
    from mutmut import __main__ as mutmut_main
    from mutmut.configuration import config
    from mutmut.state import state

    config().only_mutate = list(MODULES)
    config().pytest_add_cli_args_test_selection = _test_files()
    collect = mutmut_main.collect_or_load_stats

    def collect_then_keep_own_tests(*args, **kwargs):
        collect(*args, **kwargs)
        # mutmut knows every test that called a function; keep those of its module.
        by_function = state().tests_by_mangled_function_name
        for function, tests in by_function.items():
            own = next((prefixes for path, prefixes in MODULES.items()
                        if function.startswith(_module_name(path) + ".")), ())
            by_function[function] = {t for t in tests if t.startswith(own)}

    mutmut_main.collect_or_load_stats = collect_then_keep_own_tests


# --- the operators mutmut lacks -------------------------------------------------------------

def _negate_if(node: cst.If) -> Iterable[cst.If]:
    """``if x:`` -> ``if not (x):`` (elif branches are If nodes too)."""
    test = node.test.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    yield node.with_changes(test=cst.UnaryOperation(operator=cst.Not(), expression=test))


def _remove_raise(node: cst.Raise) -> Iterable[cst.BaseSmallStatement]:
    yield cst.Pass()


_EARLY_RETURNS: set[int] = set()  # id() of the Return nodes of the module being mutated


def _remove_early_return(node: cst.Return) -> Iterable[cst.BaseSmallStatement]:
    """A return that is not its function's last statement (a guard) falls through."""
    if id(node) in _EARLY_RETURNS:
        yield cst.Pass()


class _ReturnFinder(cst.CSTVisitor):
    """Every Return except the last statement of a function body."""

    def __init__(self) -> None:
        self.final: set[int] = set()
        self.all: set[int] = set()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        body = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
        if body and isinstance(body[-1], cst.SimpleStatementLine):
            last = body[-1].body[-1]
            if isinstance(last, cst.Return):
                self.final.add(id(last))

    def visit_Return(self, node: cst.Return) -> None:
        self.all.add(id(node))


def _install_operators() -> None:
    """Replace mutmut's operator list with the counted kinds (see the module docstring)."""
    from mutmut.mutation import file_mutation, mutators
    from mutmut.mutation.pragma_handling import get_ignored_lines

    left_out = {mutators.operator_string, mutators.operator_arg_removal,
                mutators.operator_dict_arguments}
    kept = [(kind, op) for kind, op in mutators.mutation_operators if op not in left_out]
    operators = [*kept, (cst.If, _negate_if), (cst.Raise, _remove_raise),
                 (cst.Return, _remove_early_return)]

    def create_mutations(filename, code, covered_lines=None, coverage_excluded_lines=None):
        # mutmut's create_mutations with our operators, after marking the early returns
        # of the very tree the visitor walks (MetadataWrapper copies the module).
        module = cst.parse_module(code)
        wrapper = cst.MetadataWrapper(module)
        ignored = get_ignored_lines(filename, code, wrapper, coverage_excluded_lines)
        finder = _ReturnFinder()
        wrapper.module.visit(finder)
        _EARLY_RETURNS.clear()
        _EARLY_RETURNS.update(finder.all - finder.final)
        visitor = file_mutation.MutationVisitor(operators, ignored, covered_lines)
        module = wrapper.visit(visitor)
        return module, visitor.mutations, visitor.ignored_classes, visitor.ignored_functions

    file_mutation.create_mutations = create_mutations


# --- the report -----------------------------------------------------------------------------

def report(minimum: float) -> int:
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    low = []
    survivors: list[tuple[str, str, str]] = []
    print("\nmodule                          killed / mutants   score")
    for path in MODULES:
        meta = ROOT / "mutants" / f"{path}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        statuses: Counter[str] = Counter()
        for name, code in codes.items():
            status = status_by_exit_code[code]
            statuses[status] += 1
            # A timeout is a kill (the bug made the tests hang); anything else is not.
            if status not in ("killed", "timeout"):
                survivors.append((path, name, status))
        caught = statuses["killed"] + statuses["timeout"]
        if not codes:  # e.g. slots.py: only @property methods, which mutmut leaves alone
            print(f"{path:32}     - / 0        no mutants")
            continue
        score = 100.0 * caught / len(codes)
        if score < minimum:
            low.append(path)
        print(f"{path:32}{caught:6} / {len(codes):<7}  {score:6.1f} %")
    if survivors:
        print(f"\n{len(survivors)} mutants not caught:")
    for path, name, status in survivors:
        print(f"\n# {name} ({status})")
        print(get_diff_for_mutant(name, path=path))
    if low:
        print(f"\nunder {minimum:g} %: {', '.join(low)}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--min", type=float, default=90.0, help="lowest passing score, per cent")
    parser.add_argument("--report-only", action="store_true",
                        help="print the last run's scores and survivors, run nothing")
    parser.add_argument("mutants", nargs="*",
                        help="only these mutants (mutmut names, globs allowed), "
                             "e.g. 'cni.request.*'")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if not args.report_only:
        if not args.mutants:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        _install_operators()
        _configure()
        from mutmut.__main__ import cli

        try:
            cli(["run", "--max-children", str(args.jobs), *args.mutants], standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                return int(exc.code) if isinstance(exc.code, int) else 1
    return report(args.min)


if __name__ == "__main__":
    sys.exit(main())
