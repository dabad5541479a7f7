"""The broken-fixture runner shared by deploy/check_manifests.py and
deploy/check_monitoring.py: each case directory holds an `expect.txt`, and
the check must reject the case with an error containing that text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def run_fixtures(cases: list[Path], check: Callable[[Path], list[str]], what: str) -> int:
    """Run `check` on every case; print one line each and a summary naming
    `what` ("broken fixtures"); 0 when every case was rejected for its
    stated reason, else 1."""
    failed = 0
    for case in cases:
        expect_file = case / "expect.txt"
        if not expect_file.is_file():
            print(f"FAIL {case.name}: no expect.txt")
            failed += 1
            continue
        expect = expect_file.read_text().strip()
        errors = check(case)
        if not errors:
            print(f"FAIL {case.name}: accepted, but it must be rejected ({expect})")
            failed += 1
        elif not any(expect in e for e in errors):
            print(f"FAIL {case.name}: rejected, but not for {expect!r}:")
            for e in errors:
                print(f"  {e}")
            failed += 1
        else:
            reason = next(e for e in errors if expect in e)
            extra = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            print(f"ok   {case.name}: rejected: {reason}{extra}")
    print(f"{len(cases) - failed} of {len(cases)} {what} rejected for the expected reason")
    return 1 if failed else 0
