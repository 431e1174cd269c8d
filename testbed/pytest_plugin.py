"""pytest plugin: kernel-feature markers, and tests that need the full kernel run in the VM.

``@pytest.mark.needs("netem", "vrf")`` says which kernel features a test needs. When this
kernel lacks one and a full-kernel VM can run here, every such test is deferred and all of
them run inside ONE full-kernel VM boot at the first deferred test; each test's outcome and
failure text come back to this session. A test that cannot run where it must fails (it is
never skipped silently): missing features inside the VM, no VM available, or no root for an
``integration`` test.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from .host import doctor

RESULTS_OPT = "--testbed-results"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("testbed")
    group.addoption(RESULTS_OPT, default=None,
                    help="(internal) write each test's outcome as JSON to this file")
    group.addoption("--testbed-vm", default=os.environ.get("TESTBED_VM", "auto"),
                    choices=["auto", "never"],
                    help="never: tests needing missing kernel features fail instead of "
                         "running in the VM")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs root and real network namespaces")
    config.addinivalue_line("markers", "needs(*features): kernel features the test needs; "
                                       "run in the full-kernel VM when this kernel lacks them")


@cache
def _report() -> doctor.Report:
    return doctor.diagnose()


def _needs(item: pytest.Item) -> tuple[str, ...]:
    return tuple(f for m in item.iter_markers("needs") for f in m.args)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    in_vm = os.environ.get(doctor.IN_VM_ENV) == "1"
    deferred: list[pytest.Item] = []
    for i, item in enumerate(items):
        needs = _needs(item)
        if item.get_closest_marker("integration") and os.geteuid() != 0:
            item.add_marker(pytest.mark.testbed_fail(
                "integration test needs root (network namespaces); run it as root"))
            continue
        if not needs or os.geteuid() != 0:
            continue
        report = _report()
        gaps = doctor.missing(report.features, needs)
        if not gaps:
            continue
        why = f"kernel {report.kernel} lacks {', '.join(gaps)}"
        if in_vm or config.getoption("--testbed-vm") == "never" or report.vm is None:
            detail = "; ".join(report.reasons)
            item.add_marker(pytest.mark.testbed_fail(f"{why} and cannot run elsewhere: {detail}"))
            continue
        vm_item = VMDeferredItem.from_parent(item.parent, name=item.name, original=item, why=why)
        items[i] = vm_item
        deferred.append(vm_item)
    config.stash[_DEFERRED] = deferred


_DEFERRED = pytest.StashKey[list]()
_BATCH = pytest.StashKey[dict]()


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("testbed_fail")
    if marker:
        pytest.fail(marker.args[0], pytrace=False)


class VMOutcome(Exception):
    """A deferred test failed inside the VM; carries its report text."""


class VMDeferredItem(pytest.Item):
    """Stands in for a test that runs inside the VM; reports that test's outcome."""

    def __init__(self, *, original: pytest.Item, why: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.original_nodeid = original.nodeid
        self.why = why
        self.own_markers = list(original.own_markers)

    def runtest(self) -> None:
        results = _run_batch(self.config)
        res = results.get(self.original_nodeid)
        if res is None:
            raise VMOutcome(f"{self.original_nodeid}: no result came back from the VM "
                            f"(guest crashed or timed out?)\n{results.get('__error__', '')}")
        if res["outcome"] != "passed":
            raise VMOutcome(f"[in the VM: {res['outcome']}]\n{res['longrepr']}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, VMOutcome):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.name} (in the full-kernel VM: {self.why})"


def _run_batch(config: pytest.Config) -> dict[str, Any]:
    """Run every deferred test in one VM boot (once); return nodeid -> outcome."""
    if _BATCH in config.stash:
        return config.stash[_BATCH]
    from .host.vm import VMError, run_in_vm

    deferred = config.stash[_DEFERRED]
    report = _report()
    assert report.vm is not None
    outdir = Path(tempfile.mkdtemp(prefix="testbed-vmtests-"))
    result_file = outdir / "results.json"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
            "--durations=0", "--durations-min=5",
            f"--rootdir={config.rootpath}", RESULTS_OPT, str(result_file),
            *[d.original_nodeid for d in deferred]]
    capman = config.pluginmanager.getplugin("capturemanager")
    tr = config.pluginmanager.getplugin("terminalreporter")
    results: dict[str, Any] = {}
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        if tr:
            tr.write_line("")
            tr.write_sep("=", f"running {len(deferred)} test(s) inside the full-kernel VM "
                              f"({report.vm['kernel']}, {report.vm['accelerator']})")
        try:
            rc = run_in_vm(argv, str(report.vm["kernel"]), str(report.vm["accelerator"]),
                           rwdirs=[outdir], timeout_s=float(os.environ.get(
                               "TESTBED_VM_TEST_TIMEOUT", "3000")))
            if tr:
                tr.write_sep("=", f"VM test run finished (exit {rc})")
        except VMError as exc:
            results["__error__"] = str(exc)
    if result_file.exists():
        results.update(json.loads(result_file.read_text()))
    config.stash[_BATCH] = results
    return results


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    path = item.config.getoption(RESULTS_OPT)
    if not path:
        return
    rep = outcome.get_result()
    store = item.config.stash.setdefault(_RESULTS, {})
    prev = store.get(item.nodeid)
    relevant = rep.when == "call" or rep.failed or (rep.skipped and prev is None)
    if relevant and (prev is None or prev["outcome"] == "passed"):
        store[item.nodeid] = {"outcome": rep.outcome, "when": rep.when,
                                  "longrepr": str(rep.longrepr or "")}
    Path(path).write_text(json.dumps(store))


_RESULTS = pytest.StashKey[dict]()


# -- fixtures for users' own integration tests -------------------------------------------------
@pytest.fixture
def testbed_lab() -> Any:
    """Factory: ``testbed_lab("spine_leaf", spines=2)`` (or a Network) -> a running Lab.

    Every lab made is torn down at the end of the test, whatever happens.
    """
    from topologies import build

    from .lab.lab import Lab

    labs: list[Lab] = []

    def make(topology: Any, **params: Any) -> Lab:
        net = build(topology, **params) if isinstance(topology, str) else topology
        lab = Lab(net)
        lab.__enter__()
        labs.append(lab)
        return lab

    yield make
    for lab in reversed(labs):
        lab.stop()


@pytest.fixture
def testbed_migrate() -> Any:
    """``testbed_migrate(lab, "h1-1", "h2-1", workload_mib=32)`` -> the source's result dict.

    Uses the hosts' migration stacks when the topology has them (source bound to its
    migration address, destination listening on its own), else their first addresses.
    """
    from .measure.migration import MigrationJob, migrate

    def run(lab: Any, src: str, dst: str, **job: Any) -> dict[str, Any]:
        net = lab.network
        src_stack = net.stacks_of(src).get("migration")
        dst_stack = net.stacks_of(dst).get("migration")
        dst_ip = dst_stack.ip if dst_stack else net.address(dst)
        bind = src_stack.ip if src_stack else None
        result = migrate(lab, MigrationJob(src, dst, dst_ip, bind=bind, **job)).result
        result["_source_address"] = bind
        return result

    return run
