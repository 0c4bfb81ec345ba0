"""``python -m gateway``: serve, worker, run (both + embedded Redis), plugins list / check, rules,
model train / evaluate / list / promote / rollback / corrections."""

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

from gateway.settings import load_settings
from plugins.settings import Settings, SettingsError
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
        unset = plugins.unset_settings()
        for problem in unset:
            print(f"gateway: plugins: {problem}", file=sys.stderr)
        if unset:
            return 2
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
        from router.redis_pool import redis_client as client_for
        from router.store import ComplaintStore

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


def _models_dir(args: argparse.Namespace) -> Path:
    chosen = getattr(args, "out", None) or getattr(args, "models", None)
    return Path(chosen) if chosen else _settings_or_exit().models_path


def cmd_model(args: argparse.Namespace) -> int:
    """``gateway model train [--data GLOB] [--out DIR]`` / ``evaluate FILE`` / ``list``; on the
    desk's Redis: ``promote VERSION --reason R`` / ``rollback --reason R`` / ``corrections``."""
    from router.understanding import artefacts, corpus

    if args.action in ("promote", "rollback", "corrections"):
        return _model_desk(args)
    models_dir = _models_dir(args)
    if args.action == "train":
        try:
            model = artefacts.train(args.data or corpus.DEFAULT_GLOB, models_dir)
        except (artefacts.ModelError, ValueError, OSError) as exc:
            print(f"gateway model train: {exc}", file=sys.stderr)
            return 2
        m = model.manifest
        held = m["heldout"]
        print(f"version {model.version} -> {models_dir / model.version} (current)")
        print(f"  {m['records']} messages from {len(m['data_files'])} files, {m['training_seconds']} s, "
              f"{m['model_bytes'] / 1e6:.1f} MB")
        if "macro_f1" in held:
            print(f"  held-out ({held['heldout_records']} messages of customers never trained on): macro-F1 "
                  f"{held['macro_f1']:.3f}, accuracy {held['accuracy']:.3f}, formal flag P "
                  f"{held['formal']['precision'] or 0:.3f} R {held['formal']['recall'] or 0:.3f}")
        return 0
    if args.action == "list":
        rows = artefacts.list_versions(models_dir)
        if args.json:
            print(json.dumps(rows, indent=2, ensure_ascii=False))
            return 0
        if not rows:
            print(f"no models under {models_dir} (gateway model train, or the worker trains one on first use)")
            return 0
        would_be = artefacts.model_version(corpus.data_files(), dict(_default_params()))
        for m in rows:
            flags = [f for f, on in (("current", m["current"]), ("matches data/corpus now", m["version"] == would_be)) if on]
            held = m.get("heldout", {})
            score = f"held-out macro-F1 {held['macro_f1']:.3f}" if "macro_f1" in held else "no held-out score"
            print(f"{m['version']}  {m.get('created_at', '?')}  {m.get('records', '?')} messages  {score}  "
                  f"sklearn {m.get('libraries', {}).get('sklearn', '?')}  {' '.join(f'[{f}]' for f in flags)}")
            for f in m.get("data_files", []):
                print(f"    {f['path']}  {f['sha256'][:12]}  {f.get('records', '?')} records")
        return 0
    # evaluate
    from router.understanding.evaluate import evaluate_records

    try:
        records = corpus.load_records(Path(args.file))
        model = artefacts.load(models_dir, args.version) if args.version else artefacts.load_current(models_dir)
        evaluation = evaluate_records(model, records)
    except (artefacts.ModelError, ValueError, OSError) as exc:
        print(f"gateway model evaluate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(evaluation.summary(), indent=2, ensure_ascii=False))
        return 0
    print(evaluation.report(f"{args.file}: model {model.version}"))
    return 0


def _model_desk(args: argparse.Namespace) -> int:
    """The categoriser's versions and the desk's corrections in the gateway's Redis (as the
    /v1/model endpoints): promote, rollback, corrections [--export FILE]."""
    import asyncio
    import getpass

    from router.understanding import corrections as desk
    from router.understanding.registry import ModelRegistry, RegistryError

    settings = _with_redis(_settings_or_exit())
    by = args.by if getattr(args, "by", None) else f"cli:{getpass.getuser()}"

    async def go() -> dict | list | int:
        from router.redis_pool import redis_client as client_for

        redis = client_for(settings.redis_url or "", follow_slot_of=settings.redis_prefix)
        try:
            registry = ModelRegistry(redis, settings.redis_prefix, _models_dir(args))
            if args.action == "promote":
                return await registry.promote(args.version, by=by, reason=args.reason)
            if args.action == "rollback":
                return await registry.rollback(by=by, reason=args.reason)
            if args.export:
                return await desk.export_corrections(redis, settings.redis_prefix, Path(args.export))
            items, _ = await desk.list_corrections(redis, settings.redis_prefix, limit=args.limit)
            return [c.view() for c in items]
        finally:
            await redis.aclose()

    try:
        result = asyncio.run(go())
    except RegistryError as exc:
        print(f"gateway model {args.action}: {exc.code}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"gateway model {args.action}: {exc}", file=sys.stderr)
        return 2
    if isinstance(result, int):
        print(f"{result} labelled records -> {args.export}")
    elif getattr(args, "json", False):
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif isinstance(result, list):
        for c in result:
            print(f"{c['at']}  {c['case_number'] or c['complaint_id']}  {c['from_category']} -> {c['to_category']}  "
                  f"by {c['by']}: {c['reason']}")
    else:
        target = result["version"] or "the default (no version promoted)"
        print(f"{result['action'].replace('_', ' ')}: {target} is current (was {result['previous'] or 'the default'})")
    return 0


def _default_params() -> dict:
    from router.understanding.model import DEFAULT_PARAMS

    return DEFAULT_PARAMS


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

    model = sub.add_parser("model", help="the learned categoriser: train, evaluate, list, promote, rollback, corrections")
    model_sub = model.add_subparsers(dest="action", required=True)
    train = model_sub.add_parser("train", help="train on the labelled corpus and make it current")
    train.add_argument("--data", help="glob of labelled JSONL files (default: data/corpus/train_*.jsonl)")
    train.add_argument("--out", help="models directory (default: $GATEWAY_VAR_DIR/models)")
    evaluate = model_sub.add_parser("evaluate", help="scores on a labelled JSONL file (shared/corpus/dev.jsonl's format)")
    evaluate.add_argument("file")
    evaluate.add_argument("--models", help="models directory (default: $GATEWAY_VAR_DIR/models)")
    evaluate.add_argument("--version", help="a stored version instead of the current one")
    evaluate.add_argument("--json", action="store_true")
    listing = model_sub.add_parser("list", help="stored versions, the current one marked")
    listing.add_argument("--models", help="models directory (default: $GATEWAY_VAR_DIR/models)")
    listing.add_argument("--json", action="store_true")
    promote = model_sub.add_parser("promote", help="make a trained version current on the desk (workers follow)")
    promote.add_argument("version")
    rollback = model_sub.add_parser("rollback", help="back to the version current before the last promotion")
    for command in (promote, rollback):
        command.add_argument("--reason", required=True, help="why (kept in the model's history)")
        command.add_argument("--by", help="who (default: cli:<user>)")
        command.add_argument("--models", help="models directory (default: $GATEWAY_VAR_DIR/models)")
    fixes = model_sub.add_parser("corrections", help="the desk's category corrections, newest first")
    fixes.add_argument("--limit", type=int, default=50)
    fixes.add_argument("--export", help="write every correction as labelled JSONL (the corpus format) to this file")
    fixes.add_argument("--json", action="store_true")
    model.set_defaults(func=cmd_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
