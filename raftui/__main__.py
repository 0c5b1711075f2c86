"""`raftui` entry point: attach to running members, or host a local cluster.

    raftui --endpoints 127.0.0.1:2379,127.0.0.1:22379     attach (etcd or raftnode)
    raftui [--data-dir DIR] [--members 3]                  host raftnode members locally
    raftui run FILE|NAME [--members 5] [--endpoints ...]   a scenario script, headless (raftui/scenario)
    raftui lincheck FILE                                   check a saved history (raftui/lincheck)
    raftui sim --seed S --nodes N                          step through a simulated schedule (raftui/sim)
"""
from __future__ import annotations

import argparse
import os
import sys

import themes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="raftui",
        description="Watch and break an etcd-compatible cluster from the terminal. "
                    "With --endpoints, attach to running members (raftnode or etcd 3.4+); "
                    "without, start local raftnode members and host them.",
    )
    p.add_argument("--endpoints", help="attach to these members: host:port,host:port,...")
    p.add_argument("--cacert", help="verify the members' TLS certificates with this CA bundle")
    p.add_argument("--cert", help="client TLS certificate")
    p.add_argument("--key", help="client TLS key")
    p.add_argument("--data-dir", help="host mode: where the members keep their data "
                                      "(default: a per-user directory); reusing it resumes the cluster")
    p.add_argument("--members", type=int, choices=(1, 3, 5, 7), default=3,
                   help="host mode: how many members to start (default 3)")
    p.add_argument("--readonly", action="store_true",
                   help="offer only what changes nothing: no writes, deletes, maintenance, membership, "
                        "faults or process control (to watch a cluster you must not touch)")
    p.add_argument("--keymap", help="key bindings to move, a TOML file of id = \"key\" lines (default: "
                                     "~/.config/raftui/keymap.toml if it exists; ? lists the ids)")
    p.add_argument("--theme", choices=sorted(themes.THEMES), default=themes.DEFAULT_THEME,
                   help="colour theme (T cycles it at run time)")
    p.add_argument("--user", help="NAME[:PASSWORD]: authenticate as this user, as etcdctl --user does "
                                  "(the password is asked for, not echoed, when not given)")
    p.add_argument("--auth", action="store_true",
                   help="host mode: run the cluster with auth enabled, as root with the password "
                        "asked for (or --user root:PASSWORD)")
    p.add_argument("--metrics-urls", help="attach mode: each endpoint's /metrics URL, same order as --endpoints "
                   "(empty entries allowed); default: try http(s)://<endpoint>/metrics, where etcd 3.4 serves it")
    return p.parse_args(argv)


SUBCOMMANDS = {
    "run": "raftui.scenario.headless",
    "lincheck": "raftui.lincheck.replay",
    "sim": "raftui.sim.cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    args = parse_args(argv)
    # Imported after parsing so `raftui --help` stays fast and always works.
    from raftui.app import RaftuiApp, binding_ids
    from raftui.keymap import load as load_keymap
    from raftui.host import HostError, default_data_dir, raftnode_host
    from raftui.source import ClusterSource, TlsFiles, parse_endpoints

    from raftui.source.connection import AuthFailed, authenticate_now, console_auth

    tls = TlsFiles(args.cacert, args.cert, args.key) if (args.cacert or args.cert or args.key) else None
    if args.auth and args.endpoints:
        print("raftui: --auth is for host mode; attach with --user NAME[:PASSWORD]", file=sys.stderr)
        return 2
    if args.metrics_urls and not args.endpoints:
        print("raftui: --metrics-urls is for attach mode (host mode knows its members' URLs)", file=sys.stderr)
        return 2
    prompt = None
    if args.auth and not os.path.exists(os.path.join(args.data_dir or str(default_data_dir()), "cluster.json")):
        # A new cluster's root password is set from what is typed: asked
        # twice, as etcdctl user add asks, so a typo cannot lock the operator out.
        def prompt(text: str) -> str:
            import getpass
            first = getpass.getpass(text)
            if getpass.getpass("Again: ") != first:
                raise ValueError("the two passwords differ")
            return first
    try:
        auth = console_auth(args.user, args.auth, prompt=prompt)   # asks (not echoed) when needed
    except ValueError as exc:
        print(f"raftui: {exc}", file=sys.stderr)
        return 2
    finally:
        # The password now lives only behind auth's Secret: not in args,
        # where a crash report showing locals would print it.
        if args.user:
            args.user = args.user.partition(":")[0]
    if auth is not None:
        import inspect

        # Until ClusterSource takes auth= (CONSOLE-A), say so before starting or touching anything.
        if "auth" not in inspect.signature(ClusterSource).parameters:
            print("raftui: this console cannot authenticate its polls yet (--user/--auth need "
                  "ClusterSource(auth=))", file=sys.stderr)
            return 1
    keymap, problems = load_keymap(args.keymap, binding_ids())
    for problem in problems:
        print(f"raftui: {problem}", file=sys.stderr)
    host = None
    metrics_urls: dict[str, str] = {}
    if args.endpoints:
        endpoints = parse_endpoints(args.endpoints)
        if not endpoints:
            print("raftui: --endpoints names no endpoint", file=sys.stderr)
            return 2
        if args.metrics_urls:
            from raftui.source.metrics import parse_metrics_urls
            try:
                metrics_urls = parse_metrics_urls(args.metrics_urls, endpoints)
            except ValueError as exc:
                print(f"raftui: {exc}", file=sys.stderr)
                return 2
        if auth is not None:
            try:
                authenticate_now(endpoints, tls, auth)
            except AuthFailed as exc:
                print(f"raftui: {exc}", file=sys.stderr)
                return 1
            except ConnectionError:
                pass   # members down: the console retries as it polls
        label = f"attached to {len(endpoints)} endpoint(s)" + (", read-only" if args.readonly else "")
    else:
        data_dir = args.data_dir or str(default_data_dir())
        try:
            host = raftnode_host(data_dir, args.members)
            print(f"raftui: {'resuming' if host.resumed else 'starting'} {len(host.names)} members, "
                  f"data in {host.data_dir}", file=sys.stderr)
            host.start()
            host.wait_listening(timeout=15.0)
            if auth is not None:
                from raftui.host.auth import enable_root_auth
                print(f"raftui: {enable_root_auth(host.endpoints, auth, tls)}", file=sys.stderr)
        except (HostError, OSError) as exc:
            if host is not None:
                host.stop_all()
            print(f"raftui: {exc}", file=sys.stderr)
            return 1
        endpoints = host.endpoints
        metrics_urls = dict(getattr(host, "metrics_urls", {}) or {})
        label = f"hosting {len(endpoints)} members"

    source_kwargs: dict = {"metrics_urls": metrics_urls}
    if auth is not None:
        source_kwargs["auth"] = auth
    app = RaftuiApp(lambda: ClusterSource(endpoints, tls, **source_kwargs), host=host, theme=args.theme, mode_label=label,
                    readonly=args.readonly, keymap=keymap)
    try:
        app.run()
    except BaseException:
        if host is not None:  # nobody was asked; do not leave orphans behind a crash
            host.stop_all()
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
