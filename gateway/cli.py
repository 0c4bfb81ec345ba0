"""``python -m gateway``: serve, worker, run (both + embedded Redis), plugins list / check."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from msgspec.structs import replace
from pathlib import Path

import msgspec

from gateway.settings import Settings, SettingsError, load_settings
from normalizer.pii import JsonFormatter, MaskingFilter


def setup_logging(level: str, fmt: str | None = None) -> None:
    """JSON lines (GATEWAY_LOG_FORMAT=json, the default) or plain text (=text), personal data
    masked either way."""
    handler = logging.StreamHandler()
    fmt = fmt or os.environ.get("GATEWAY_LOG_FORMAT", "json")
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(MaskingFilter())  # personal data never reaches the logs
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "httpcore"):  # httpx logs request URLs (tokens in them)
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"gateway: bad setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _with_redis(settings: Settings) -> Settings:
    if settings.redis_url:
        return settings
    from gateway.embedded_redis import EmbeddedRedisError, ensure_embedded_redis

    try:
        url = ensure_embedded_redis(settings.var_dir, fsync=settings.embedded_redis_fsync)
    except EmbeddedRedisError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return replace(settings, redis_url=url)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _with_redis(_settings_or_exit())
    setup_logging(settings.log_level)
    from plugins.manager import PluginConfigError

    os.environ["REDIS_URL"] = settings.redis_url or ""
    try:
        from gateway.app import create_app

        create_app(settings)  # fail here, with a clear message, on bad plugins.toml
    except PluginConfigError as exc:
        print(f"gateway: plugins: {exc}", file=sys.stderr)
        return 2
    if args.server == "granian":
        from granian import Granian
        from granian.constants import Interfaces

        Granian("gateway.asgi:app", address=args.host, port=args.port, interface=Interfaces.ASGI,
                workers=args.workers, log_access=False).serve()
        return 0
    import uvicorn

    uvicorn.run("gateway.asgi:app", host=args.host, port=args.port, workers=args.workers, loop="uvloop",
                http="httptools", access_log=False, log_config=None, lifespan="on")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _with_redis(_settings_or_exit())
    setup_logging(settings.log_level)
    from plugins.manager import PluginConfigError
    from router.worker import run_worker

    try:
        run_worker(settings)
    except PluginConfigError as exc:
        print(f"gateway: plugins: {exc}", file=sys.stderr)
        return 2
    return 0


def _dev_credentials(var_dir: Path) -> dict[str, str]:
    """Development credentials, made once and kept under var/ so they survive restarts."""
    path = var_dir / "dev-credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    creds = {
        "GATEWAY_APP_KEYS": f"app:{secrets.token_urlsafe(24)}",
        "GATEWAY_AGENT_TOKENS": f"alice:{secrets.token_urlsafe(24)},bob:{secrets.token_urlsafe(24)}",
        "GATEWAY_SUPERVISOR_TOKENS": f"sam:{secrets.token_urlsafe(24)}",
    }
    var_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds, indent=2))
    path.chmod(0o600)
    return creds


def cmd_run(args: argparse.Namespace) -> int:
    """Gateway + one worker (+ the embedded Redis when REDIS_URL is unset), for development."""
    settings = _settings_or_exit()
    env = dict(os.environ)
    for name, value in _dev_credentials(settings.var_dir).items():
        env.setdefault(name, value)
        if not env[name]:
            env[name] = value
    settings = _with_redis(settings)
    env["REDIS_URL"] = settings.redis_url or ""
    env.setdefault("GATEWAY_PUBLIC_URL", f"http://{args.host}:{args.port}")
    base = [sys.executable, "-m", "gateway"]
    children = [
        subprocess.Popen(base + ["serve", "--host", args.host, "--port", str(args.port)], env=env),
        subprocess.Popen(base + ["worker"], env=env),
    ]
    url = f"http://{args.host}:{args.port}"
    app_key = env["GATEWAY_APP_KEYS"].split(",")[0].split(":", 1)[-1]
    agent = env["GATEWAY_AGENT_TOKENS"].split(",")[0].split(":", 1)[-1]
    supervisor = env["GATEWAY_SUPERVISOR_TOKENS"].split(",")[0].split(":", 1)[-1]
    print(
        f"\n  Complaint gateway on {url}  (OpenAPI: {url}/schema)\n"
        f"  Redis: {settings.redis_url}{' (embedded, AOF under ' + str(settings.var_dir / 'redis') + ')' if not os.environ.get('REDIS_URL') else ''}\n"
        f"  Development credentials (kept in {settings.var_dir / 'dev-credentials.json'}):\n"
        f"    app key         {app_key}\n"
        f"    agent token     {agent}\n"
        f"    supervisor      {supervisor}\n\n"
        f"  Try:  curl -s -X POST {url}/v1/messages -H 'Authorization: Bearer {app_key}' \\\n"
        f"          -H 'Content-Type: application/json' -d '{{\"user_id\":\"u1\",\"text\":\"我被重复扣款了 ¥128.50\"}}'\n",
        flush=True,
    )

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(c.poll() is None for c in children):
        time.sleep(0.2)
    stop(signal.SIGTERM, None)
    deadline = time.monotonic() + 10
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return 0 if stopping else 1


def cmd_plugins(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    from plugins.manager import GatewayPlugins, PluginConfigError

    try:
        plugins = GatewayPlugins.load(settings.plugins_path, autoload=settings.plugins_autoload)
    except PluginConfigError as exc:
        print(f"gateway: plugins: {exc}", file=sys.stderr)
        return 2
    if args.action == "check":
        print(f"{settings.plugins_path}: ok ({len(plugins.loaded)} plugins)")
        return 0
    rows = plugins.describe()
    if args.json:
        print(msgspec.json.encode(rows).decode())
        return 0
    for row in rows:
        print(f"{row['name']:<16} {row['target']:<36} {row['source']}")
        print(f"{'':<16} hooks: {', '.join(row['hooks']) or '-'}")
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    """``gateway rules validate FILE`` / ``gateway rules dry-run FILE`` (JSON or TOML)."""
    from router.rules import load_file, validate

    try:
        rule_set = load_file(Path(args.file))
    except (OSError, ValueError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    problems = validate(rule_set)
    for p in problems:
        print(f"{args.file}: rule {p.rule}: {p.field}: {p.problem}", file=sys.stderr)
    if problems:
        return 1
    if args.action == "validate":
        print(f"{args.file}: ok ({len(rule_set.rules)} rules, {len(rule_set.queues)} queues)")
        return 0
    settings = _settings_or_exit()
    if not settings.redis_url:
        print("gateway rules dry-run: set REDIS_URL to the gateway's Redis", file=sys.stderr)
        return 2

    async def go() -> dict:
        from gateway.api_routing import dry_run
        from gateway.redis_pool import redis_client as client_for
        from gateway.store import ComplaintStore

        redis_client = client_for(settings.redis_url or "", follow_slot_of=settings.redis_prefix)
        store = ComplaintStore(settings.redis_prefix)
        store.bind(redis_client)
        try:
            return await dry_run(store, rule_set, limit=args.limit, since_minutes=args.since_minutes)
        finally:
            await redis_client.aclose()

    import asyncio

    report = asyncio.run(go())
    print(msgspec.json.encode(report).decode() if args.json else _dry_run_text(report))
    return 0


def _dry_run_text(report: dict) -> str:
    lines = [f"examined {report['examined']} complaints: {report['would_move']} would move, "
             f"{report['unchanged']} unchanged"]
    for move in report["moves"]:
        cases = ", ".join(e["case_number"] for e in move["examples"])
        lines.append(f"  {move['from'] or '-'} -> {move['to']}: {move['count']} (e.g. {cases})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Omnichannel complaint-intake gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="HTTP server processes")
    serve.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run one arq worker")
    worker.set_defaults(func=cmd_worker)

    run = sub.add_parser("run", help="gateway + worker (+ embedded Redis) for development")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.set_defaults(func=cmd_run)

    plugins = sub.add_parser("plugins", help="inspect plugins")
    plugins.add_argument("action", choices=["list", "check"])
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    rules = sub.add_parser("rules", help="check a routing rule file, or what it would do")
    rules.add_argument("action", choices=["validate", "dry-run"])
    rules.add_argument("file", help="a rule set, .json or .toml")
    rules.add_argument("--limit", type=int, default=500, help="dry-run: the last N complaints")
    rules.add_argument("--since-minutes", type=int, default=None, help="dry-run: or those of the last N minutes")
    rules.add_argument("--json", action="store_true")
    rules.set_defaults(func=cmd_rules)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
