"""The `meshproxy` command line.

Owns: argument parsing, reading the config file and the process environment (the core reads
neither), wiring sinks, and the banner that tells a newcomer what is running.

  meshproxy serve   run the proxy (anyio + h11); with no provider key configured it starts the
                    built-in simulated provider in-process, says so, and prints a ready token
  meshproxy token   mint a dev room token
  meshproxy env     print the environment (base URLs, token, session) a room service needs
  meshproxy usage   account usage offline from HAR files, capture logs or response bodies
  meshproxy usage report   totals over the ledger (table, CSV, JSON or an HTML page)
  meshproxy prices  list what the price book can price, or show one model with a worked example

Does not own: any decision about requests (the core) or serving (adapters.server).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shlex
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import attrs

from meshproxy_core.auth import mint_token
from meshproxy_core.config import ConfigError, ProviderSettings, ProxyConfig
from meshproxy_core.exchange import Proxy
from meshproxy_core.pricing import PriceBook
from meshproxy_core.records import UsageSink

__all__ = ["main"]

log = logging.getLogger("meshproxy")

DEFAULT_PORT = 8787
SIMULATED_KEY = "sk-simulated-provider"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["usage", "report"]:
        # `meshproxy usage FILES…` accounts logs offline; `meshproxy usage report` reads the
        # ledger. argparse cannot put a subcommand beside positional files, so route here.
        from .report_cli import run_report

        return run_report(argv[2:], sys.stdout, sys.stderr)
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"meshproxy: configuration error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshproxy", description="Room-scoped LLM proxy.")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    serve.add_argument("--config", type=Path, help="TOML config file")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--records", type=Path, help="append every usage record to this JSONL file")
    serve.add_argument(
        "--log-http", action="store_true", help="log requests (credentials redacted)"
    )
    serve.add_argument("--ledger", help="ledger path or URL (sqlite path, postgresql://…)")
    serve.add_argument("--no-ledger", action="store_true", help="do not write the ledger")
    serve.add_argument(
        "--capture", type=Path, help="append each forwarded exchange to this capture log (JSONL)"
    )
    serve.add_argument("--public-url", help="the URL clients reach the proxy at")
    serve.add_argument(
        "--simulate", action="store_true", help="use the simulated provider even if keys are set"
    )
    serve.set_defaults(run=_serve)

    token = commands.add_parser("token", help="mint a dev room token")
    _add_token_claims(token)
    token.add_argument("--session")
    token.add_argument("--kid")
    token.add_argument("--secret", help="signing secret (default: $MESHAGENT_SECRET)")
    token.set_defaults(run=_token)

    env = commands.add_parser("env", help="print the environment a room service needs")
    _add_token_claims(env)
    env.add_argument("--session", help="session id (default: a new one)")
    env.add_argument("--proxy-url", default=f"http://127.0.0.1:{DEFAULT_PORT}")
    env.add_argument("--secret", help="signing secret (default: $MESHAGENT_SECRET)")
    env.add_argument("--format", choices=["shell", "dotenv", "json"], default="shell")
    env.set_defaults(run=_env)

    from .prices_cli import add_prices_command
    from .usage_cli import add_usage_command

    add_prices_command(commands)
    add_usage_command(commands)
    return parser


def load_document(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        # Decimal, not float: `[prices]` overrides are money and must stay exact.
        return tomllib.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _settings(cls: type, data: Any, table: str) -> Any:
    """Build an attrs settings class from a config table, naming unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{table}] must be a table")
    known = {field.name for field in attrs.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"[{table}] has unknown keys: {', '.join(sorted(unknown))}")
    values = {k: float(v) if isinstance(v, Decimal) else v for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{table}]: {exc}") from exc


def _add_token_claims(parser: argparse.ArgumentParser) -> None:
    """The claims `token` and `env` both mint a room token from."""
    parser.add_argument("--room", required=True)
    parser.add_argument("--participant", required=True)
    parser.add_argument("--project", default="dev-project")
    parser.add_argument("--models", action="append", help="provider/model pattern (repeatable)")
    parser.add_argument("--ttl", type=float, default=3600.0, help="token lifetime in seconds")


def _token(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get("MESHAGENT_SECRET")
    if not secret:
        print("meshproxy token: no secret; pass --secret or set MESHAGENT_SECRET", file=sys.stderr)
        return 2
    models = [m for group in args.models or [] for m in group.split(",") if m]
    print(
        mint_token(
            secret,
            project=args.project,
            room=args.room,
            participant=args.participant,
            now=time.time(),
            ttl=args.ttl,
            models=models or None,
            session=args.session,
            kid=args.kid,
        )
    )
    return 0


def room_environment(
    *,
    proxy_url: str,
    room: str,
    token: str,
    session: str,
) -> dict[str, str]:
    """The variables a room service needs to reach the proxy with the official SDKs, unmodified:
    both SDKs read their base URL and key from these names."""
    base = f"{proxy_url.rstrip('/')}/rooms/{room}"
    return {
        "OPENAI_BASE_URL": f"{base}/openai/v1",
        "ANTHROPIC_BASE_URL": f"{base}/anthropic",
        "OPENAI_API_KEY": token,
        "ANTHROPIC_API_KEY": token,
        "MESHAGENT_TOKEN": token,
        "MESHAGENT_SESSION_ID": session,
    }


def _env(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get("MESHAGENT_SECRET")
    if not secret:
        print("meshproxy env: no secret; pass --secret or set MESHAGENT_SECRET", file=sys.stderr)
        return 2
    session = args.session or f"sess_{secrets.token_hex(8)}"
    models = [m for group in args.models or [] for m in group.split(",") if m]
    token = mint_token(
        secret,
        project=args.project,
        room=args.room,
        participant=args.participant,
        now=time.time(),
        ttl=args.ttl,
        models=models or None,
        session=session,
    )
    variables = room_environment(
        proxy_url=args.proxy_url, room=args.room, token=token, session=session
    )
    if args.format == "json":
        print(json.dumps(variables, indent=2))
    else:
        prefix = "export " if args.format == "shell" else ""
        for name, value in variables.items():
            print(f"{prefix}{name}={shlex.quote(value) if prefix else value}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    document = load_document(args.config)
    args.document = document
    config = ProxyConfig.from_mapping(document, os.environ)
    if args.public_url:
        config = attrs.evolve(config, public_url=args.public_url)
    from meshproxy.adapters.relay import UpstreamTimeouts
    from meshproxy.adapters.server import ServerLimits

    limits = _settings(ServerLimits, document.get("server", {}), "server")
    timeouts = _settings(UpstreamTimeouts, document.get("upstream", {}), "upstream")
    from .recording import Recorder

    recorder = Recorder.from_config(
        document,
        os.environ,
        sinks=_sinks(args),
        ledger_url=args.ledger,
        ledger_enabled=False if args.no_ledger else None,
    )
    try:
        anyio.run(_serve_async, args, config, limits, timeouts, recorder)
    finally:
        recorder.close()
    return 0


async def _serve_async(
    args: argparse.Namespace, config: ProxyConfig, limits: Any, timeouts: Any, recorder: Any
) -> None:
    from meshproxy.adapters.server import CaptureLog, Server
    from meshproxy.adapters.testing import serve_simulated_provider

    generated_secret = not config.secrets
    if generated_secret:
        config = attrs.evolve(config, secrets={"": secrets.token_urlsafe(32)})
    simulated = args.simulate or not config.has_any_provider_key()
    capture = CaptureLog(str(args.capture)) if args.capture else None
    async with anyio.create_task_group() as group:
        if simulated:
            fake = await group.start(serve_simulated_provider, "127.0.0.1", 0)
            config = _simulated(config, fake.base_url)
        proxy, admin, settings = build_admin(
            args.document, os.environ, config, build_proxy(config), recorder
        )
        server = Server(
            proxy,
            admin=admin,
            settings=settings,
            recorder=recorder,
            limits=limits,
            timeouts=timeouts,
            log_http=args.log_http,
            capture=capture,
        )
        port = await group.start(server.serve, args.host, args.port)
        _banner(config, args.host, port, simulated=simulated, generated_secret=generated_secret)
        await server.wait_stopped()
        group.cancel_scope.cancel()
    if capture is not None:
        capture.close()
    if settings is not None:
        settings.store.close()


def _simulated(config: ProxyConfig, base: str) -> ProxyConfig:
    providers = {
        "openai": ProviderSettings(api_key=SIMULATED_KEY, base_url=f"{base}/v1"),
        "anthropic": ProviderSettings(api_key=SIMULATED_KEY, base_url=base),
    }
    return attrs.evolve(config, providers=providers, projects={}, simulated=True)


def components_from_environment(env: Mapping[str, str]) -> tuple[Proxy, Any]:
    """The proxy and its recorder for an app server (uvicorn, gunicorn…), configured like
    `meshproxy serve`: `MESHPROXY_CONFIG` names a TOML file, `MESHPROXY_RECORDS` a JSONL
    record file, `MESHPROXY_LEDGER` the ledger; keys and the token secret from the environment."""
    from .recording import Recorder

    env = dict(env)
    path = env.get("MESHPROXY_CONFIG")
    document = load_document(Path(path) if path else None)
    sinks: list[UsageSink] = []
    if env.get("MESHPROXY_RECORDS"):
        from meshproxy.contrib.jsonl import JsonlSink

        sinks.append(JsonlSink(env["MESHPROXY_RECORDS"]))
    recorder = Recorder.from_config(document, env, sinks=sinks)
    return build_proxy(ProxyConfig.from_mapping(document, env)), recorder


def admin_from_environment(
    env: Mapping[str, str], proxy: Proxy, recorder: Any
) -> tuple[Proxy, Any, Any]:
    """`build_admin` for an app server configured by `components_from_environment`."""
    path = env.get("MESHPROXY_CONFIG")
    document = load_document(Path(path) if path else None)
    return build_admin(document, env, proxy.config, proxy, recorder)


def build_admin(
    document: Mapping[str, Any],
    env: Mapping[str, str],
    config: ProxyConfig,
    proxy: Proxy,
    recorder: Any,
) -> tuple[Proxy, Any, Any]:
    """Project settings from the ledger's database, and the admin API that changes them.

    With the ledger on, the database's project settings are laid over the config file's
    (project by project) and followed at run time; the admin API is served when an admin token
    is set (`MESHPROXY_ADMIN_TOKEN` or `[admin] token`). Returns (proxy, admin, live settings);
    without the ledger: (proxy, None, None)."""
    table = document.get("admin", {})
    if not isinstance(table, Mapping) or set(table) - {"token"}:
        raise ConfigError("[admin] must be a table with only `token`")
    token = env.get("MESHPROXY_ADMIN_TOKEN") or table.get("token") or None
    if token is not None and not isinstance(token, str):
        raise ConfigError("[admin] token must be a string")
    if recorder.ledger is None:
        if token:
            log.warning(
                "an admin token is set but the ledger is off: the admin API needs the "
                "ledger's database, so it is disabled"
            )
        return proxy, None, None
    from meshproxy.contrib.settings import location_of, open_settings_store

    from .admin import AdminAPI
    from .live_settings import LiveSettings

    store = open_settings_store(location_of(recorder.ledger), env=env, base=config.projects)
    try:
        admin = AdminAPI(store, token) if token else None
    except ConfigError:
        store.close()
        raise
    live = LiveSettings(store, proxy)
    return live.reload(), admin, live


def build_proxy(config: ProxyConfig) -> Proxy:
    """The proxy every adapter runs: the config, and the shipped price book with the config's
    `[prices]` overrides."""
    book = PriceBook.default()
    if config.price_overrides:
        book = book.with_overrides(config.price_overrides)
    return Proxy(config, prices=book)


def _sinks(args: argparse.Namespace) -> list[UsageSink]:
    sinks: list[UsageSink] = [_LogSink()]
    if args.records is not None:
        from meshproxy.contrib.jsonl import JsonlSink

        sinks.append(JsonlSink(args.records))
    return sinks


class _LogSink:
    """Logs one line per record: who, what, how much (never a credential)."""

    def emit(self, record: Any) -> None:
        principal = record.principal
        who = f"{principal.project}/{principal.room}/{principal.participant}" if principal else "-"
        cost = record.cost.total if record.cost is not None else "-"
        log.info(
            "record %s %s %s %s status=%s outcome=%s tokens=%s cost=%s",
            record.request_id,
            who,
            record.endpoint or "-",
            record.model or "-",
            record.status,
            record.outcome.value,
            record.usage.token_total(),
            cost,
        )


def _banner(
    config: ProxyConfig, host: str, port: int, *, simulated: bool, generated_secret: bool
) -> None:
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    lines = [f"meshproxy listening on {url}"]
    if simulated:
        lines += [
            "",
            "!" * 78,
            "!! No provider API key is configured: requests go to the BUILT-IN SIMULATED",
            "!! PROVIDER. Answers are generated locally; nothing reaches OpenAI/Anthropic.",
            "!! Set OPENAI_API_KEY / ANTHROPIC_API_KEY (or a config file) for real providers.",
            "!" * 78,
        ]
    if generated_secret or simulated:
        token = mint_token(
            config.secrets.get("") or next(iter(config.secrets.values())),
            project="dev-project",
            room="dev-room",
            participant="you",
            now=time.time(),
            ttl=24 * 3600,
        )
        if generated_secret:
            lines += ["", "No MESHAGENT_SECRET set: generated a secret for this process only."]
        lines += [
            "",
            "A room token (project dev-project, room dev-room, valid 24 h):",
            f"  export MESHPROXY_TOKEN={token}",
            "",
            _EXAMPLE.format(url=url),
        ]
    print("\n".join(lines), flush=True)


_EXAMPLE = """\
Try it (in another terminal, after the export above):
  curl -s {url}/openai/v1/chat/completions \\
    -H "Authorization: Bearer $MESHPROXY_TOKEN" \\
    -H "Content-Type: application/json" \\
    -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hello"}}]}}'

or with the OpenAI SDK:
  OPENAI_BASE_URL={url}/openai/v1 OPENAI_API_KEY="$MESHPROXY_TOKEN" python -c \\
    'import openai; print(openai.OpenAI().chat.completions.create(model="gpt-4o-mini", \\
     messages=[{{"role":"user","content":"Hello"}}]).choices[0].message.content)'"""


if __name__ == "__main__":
    raise SystemExit(main())
