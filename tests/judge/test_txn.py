"""txn from stdin (plain and --interactive): compares, success/failure branches, errors."""
from __future__ import annotations

from tests.judge.framework import Case


def test_txn_branches(case: Case) -> None:
    p = "txn1/"
    case.same("put", f"{p}a", "1", rc=0)                                   # +1
    # mod(a) > 0 -> success branch
    case.same("txn", input=f'mod("{p}a") > "0"\n\nput {p}a "overwrote"\nget {p}a\n\nput {p}b "created"\n\n',
              rc=0)                                                         # +2
    # compare on a missing key's create revision -> failure branch, two puts
    case.same("txn", input=f'create("{p}missing") > "0"\n\nput {p}x "no"\n\nput {p}b "created"\nput {p}c "extra"\n\n',
              rc=0)                                                         # +3
    # several compares, all must hold; a range get in the success branch
    case.same("txn", input=(f'value("{p}a") = "overwrote"\nversion("{p}a") = "2"\ncreate("{p}b") > "0"\n\n'
                            f'get {p} --prefix\ndel {p}c\n\n\n'),
              rc=0)                                                         # +4
    case.same("get", p, "--prefix", "-w", "json", rc=0)


def test_txn_compares_with_revisions(case: Case) -> None:
    p = "txn2/"
    case.same("put", f"{p}k", "v", rc=0)                                    # +1
    # mod("k") = base+1 holds on both sides; the revision is per side.
    script = lambda rev: f'mod("{p}k") = "{rev}"\n\nput {p}k "matched"\n\nput {p}k "missed"\n\n'  # noqa: E731
    for side in case.judge.sides:
        side.vars["txn2_script"] = script(case.base_rev(side) + 1)
    outs = [case.run(s, "txn", "-w", "json", input=s.vars["txn2_script"]) for s in case.judge.sides]
    case.same_text(*outs, what="txn with a per-side mod revision")
    assert outs[0].rc == 0 and '"succeeded":true' in outs[0].stdout, outs[0]
    case.same("get", f"{p}k", "--print-value-only", rc=0)


def test_txn_output_formats(case: Case) -> None:
    p = "txn3/"
    case.same("put", f"{p}a", "1", rc=0)
    body = f'value("{p}a") = "1"\n\nput {p}a "2"\nget {p}a\ndel {p}zz\n\nget {p}a\n\n'
    case.same("txn", "-w", "json", input=body, rc=0)
    case.same("txn", "-w", "fields", input=body, rc=0)     # now the failure branch (a is "2")
    case.same("txn", "-w", "simple", input=body, rc=0)


def test_txn_interactive(case: Case) -> None:
    p = "txn4/"
    case.same("put", f"{p}a", "1", rc=0)
    case.same("txn", "--interactive", input=f'value("{p}a") = "1"\n\nput {p}a "2"\ndel {p}a\nput {p}b "3"\n\n\n',
              rc=1)   # duplicate key a in one branch -> etcdserver: duplicate key given in txn request
    case.same("txn", "-i", input=f'value("{p}a") = "1"\n\nput {p}a "2"\nput {p}b "3"\n\nget {p}a\n\n', rc=0)
    case.same("txn", "-i", input=f'value("{p}a") = "1"\n\nput {p}a "x"\n\nget {p}a\nget {p}b\n\n', rc=0)
    case.same("get", p, "--prefix", rc=0)


def test_txn_errors(case: Case) -> None:
    p = "txn5/"
    case.same("txn", input="bogus\n\n\n\n", rc=3)                          # client-side parse error
    case.same("txn", input=f'\n\nput {p}a "1"\nput {p}a "2"\n\n\n', rc=1)  # duplicate key
    # 129 operations in one branch: etcdserver: too many operations in txn request
    many = "".join(f'put {p}k{i} "v"\n' for i in range(129))
    case.same("txn", input=f"\n{many}\n\n", rc=1)
    exact = "".join(f'put {p}k{i} "v"\n' for i in range(128))              # 128 is still allowed
    case.same("txn", input=f"\n{exact}\n\n", rc=0)
    case.same("txn", input='value("") = "x"\n\n\n\n', rc=1)                # empty key in a compare
    case.same("get", p, "--prefix", "--keys-only", "--limit", "3", rc=0)
