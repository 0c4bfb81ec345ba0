"""Loading plugins and calling their hooks through one typed wrapper.

The rest of the code calls ``plugins.sender(...)``, ``plugins.routes(...)`` and so on, never
``pm.hook.x(...)``. Each implementation is called on its own so a plugin that raises is
isolated: logged, counted in ``errors``, and the other plugins still answer.

Internal: not part of the plugin kit (``plugins.kit``, the one stable module a plugin imports
from); the built-in channels that still use it are tied to this release.
"""

from __future__ import annotations

import collections
import importlib
import inspect
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import msgspec
import pluggy

from . import hookspecs
from .contract import GatewayServices, Poller, RouteMount, Sender

if TYPE_CHECKING:
    from normalizer.schema import Classification, Complaint, ComplaintEvent, InboundMessage

log = logging.getLogger("gateway.plugins")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class PluginConfigError(ValueError):
    """plugins.toml or a plugin's settings are wrong; the message names the plugin and field."""


#: Hooks the gateway needs an answer from at once, so an ``async def`` implementation is refused
#: when the plugin is registered (its coroutine would stand where the answer should be): why each.
SYNC_HOOKS = {
    "gateway_routes": "the routes are mounted while the HTTP app is built, before anything is awaited",
    "gateway_pollers": "the pollers are collected while a worker starts, before its tasks run",
    "channel_sender": "the sender is asked for each time a reply goes out and must be handed back at once",
}


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


@dataclass
class LoadedPlugin:
    name: str
    plugin: Any
    source: str  # "plugins.toml" or "entry point (<distribution>)"
    target: str  # "module:attr"
    settings: Any = None
    hooks: list[str] = field(default_factory=list)
    #: For each setting written ``${VAR}`` in plugins.toml, the variables it reads.
    variables: dict[str, list[str]] = field(default_factory=dict)


def expand_env(value: Any, env: Mapping[str, str], where: str) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a TOML value."""
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [expand_env(v, env, where) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env, f"{where}.{k}") for k, v in value.items()}
    return value


def read_plugins_toml(path: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parse plugins.toml: ``[gateway]`` options and one ``[plugins.<name>]`` table per plugin."""
    env = os.environ if env is None else env
    if not path.exists():
        return {"gateway": {}, "plugins": {}}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PluginConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"gateway", "plugins"}
    if unknown:
        raise PluginConfigError(f"{path}: unknown top-level table(s): {', '.join(sorted(unknown))}")
    plugins = data.get("plugins", {})
    if not isinstance(plugins, dict):
        raise PluginConfigError(f"{path}: [plugins] must be a table")
    for name, table in plugins.items():
        if not _NAME_RE.match(name):
            raise PluginConfigError(f"{path}: plugin name {name!r} must be lowercase letters, digits, _")
        if not isinstance(table, dict):
            raise PluginConfigError(f"{path}: [plugins.{name}] must be a table")
        extra = set(table) - {"use", "enabled", "settings"}
        if extra:
            raise PluginConfigError(f"{path}: [plugins.{name}] unknown key(s): {', '.join(sorted(extra))}")
        if "enabled" in table and not isinstance(table["enabled"], bool):
            raise PluginConfigError(f"{path}: [plugins.{name}].enabled must be true or false")
        raw = table.get("settings", {})
        table["variables"] = {k: [m.group(1) for m in _ENV_REF.finditer(v)]
                              for k, v in raw.items() if isinstance(v, str)} if isinstance(raw, dict) else {}
        table["settings"] = expand_env(raw, env, f"plugins.{name}.settings")
    return {"gateway": data.get("gateway", {}), "plugins": plugins}


def _resolve(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def instantiate(name: str, target_obj: Any, raw_settings: Mapping[str, Any]) -> tuple[Any, Any]:
    """Build a plugin object: a class gets its ``Settings`` struct decoded from ``raw_settings``."""
    if inspect.isclass(target_obj):
        settings_type = getattr(target_obj, "Settings", None)
        if settings_type is None:
            if raw_settings:
                raise PluginConfigError(f"plugin {name!r} takes no settings, got: {', '.join(raw_settings)}")
            return target_obj(), None
        try:
            settings = msgspec.convert(dict(raw_settings), settings_type, strict=False)
        except msgspec.ValidationError as exc:
            raise PluginConfigError(f"plugin {name!r} settings: {exc}") from None
        return target_obj(settings), settings
    if raw_settings:
        raise PluginConfigError(f"plugin {name!r} is a module or instance and takes no settings")
    return target_obj, None


class GatewayPlugins:
    """The typed face of the pluggy plugin manager."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.loaded: dict[str, LoadedPlugin] = {}
        self.errors: collections.Counter[str] = collections.Counter()

    # -- loading -----------------------------------------------------------------------------

    def register(self, name: str, plugin: Any, *, source: str = "code", target: str = "", settings: Any = None,
                 variables: dict[str, list[str]] | None = None) -> None:
        if name in self.loaded:
            raise PluginConfigError(f"plugin {name!r} is registered twice")
        self.pm.register(plugin, name=name)
        callers = self.pm.get_hookcallers(plugin) or ()
        for caller in callers:
            if caller.name not in SYNC_HOOKS:
                continue
            if any(impl.plugin is plugin and _is_async(impl.function) for impl in caller.get_hookimpls()):
                self.pm.unregister(plugin)
                raise PluginConfigError(
                    f"plugin {name!r}: hook {caller.name} must be a plain function (def), not async def: "
                    f"{SYNC_HOOKS[caller.name]}. Return the object at once and do the waiting in its own "
                    "async methods (a sender's send, a poller's run, the route handlers).")
        hooks = sorted(h.name for h in callers if not h.name.startswith("_"))
        self.loaded[name] = LoadedPlugin(name, plugin, source, target or repr(plugin), settings, hooks,
                                         variables or {})

    def check(self) -> None:
        """Fail now, not later, when a plugin implements a hook that does not exist."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginConfigError(str(exc)) from None

    @classmethod
    def load(
        cls, plugins_path: Path, *, autoload: bool = True, env: Mapping[str, str] | None = None
    ) -> "GatewayPlugins":
        """Load plugins from plugins.toml, then installed packages' entry points (unless off)."""
        config = read_plugins_toml(plugins_path, env)
        gateway_opts = config["gateway"]
        autoload = autoload and bool(gateway_opts.get("autoload", True))
        tables: dict[str, dict[str, Any]] = config["plugins"]
        eps = {ep.name: ep for ep in entry_points(group=hookspecs.ENTRY_POINT_GROUP)}

        self = cls()
        for name, table in tables.items():
            if not table.get("enabled", True):
                continue
            if "use" in table:
                target, source = str(table["use"]), f"plugins.toml ({plugins_path})"
            elif name in eps:
                ep = eps[name]
                target = ep.value
                source = f"plugins.toml + entry point ({ep.dist.name if ep.dist else '?'})"
            else:
                raise PluginConfigError(
                    f"{plugins_path}: [plugins.{name}] has no 'use' and no installed entry point is called {name!r}"
                )
            try:
                obj = _resolve(target)
            except (ImportError, AttributeError) as exc:
                raise PluginConfigError(f"plugin {name!r}: cannot import {target!r}: {exc}") from None
            plugin, settings = instantiate(name, obj, table.get("settings", {}))
            self.register(name, plugin, source=source, target=target, settings=settings,
                          variables=table.get("variables"))

        if autoload:
            for name, ep in sorted(eps.items()):
                if name in tables:
                    continue  # configured (or switched off) above
                try:
                    obj = ep.load()
                except Exception as exc:  # a broken third-party package must not stop the desk
                    log.error("plugin %s: entry point %s failed to load: %s", name, ep.value, exc)
                    self.errors[name] += 1
                    continue
                plugin, settings = instantiate(name, obj, {})
                dist = ep.dist.name if ep.dist else "?"
                self.register(name, plugin, source=f"entry point ({dist})", target=ep.value, settings=settings)
        self.check()
        return self

    def unset_settings(self) -> list[str]:
        """A setting a plugin lists in its ``required_settings`` that is empty, each named with the
        variable to set (what ``python -m gateway plugins check`` refuses)."""
        problems = []
        for loaded in self.loaded.values():
            for setting in getattr(loaded.plugin, "required_settings", ()):
                if getattr(loaded.settings, setting, None) not in (None, "", [], {}):
                    continue
                names = [n for n in loaded.variables.get(setting) or [] if n]
                fix = f"set {' or '.join(names)}" if names else f"set it in [plugins.{loaded.name}.settings]"
                problems.append(f"plugin {loaded.name!r}: setting {setting!r} is empty ({fix})")
        return problems

    # -- calling -----------------------------------------------------------------------------

    def _impls(self, hook_name: str) -> list[tuple[str, Any]]:
        caller = getattr(self.pm.hook, hook_name)
        # pluggy calls the last registered first; keep that order (tryfirst/trylast respected).
        return [(impl.plugin_name, impl.function) for impl in reversed(caller.get_hookimpls())]

    def _needs_personal_data(self, plugin_name: str) -> bool:
        plugin = self.pm.get_plugin(plugin_name)
        return bool(getattr(plugin, "needs_personal_data", False))

    async def _call_each_private(self, hook_name: str, full: dict[str, Any], masked: Callable[[], dict[str, Any]], *,
                                 first: bool = False, only: str | None = None,
                                 active: str | None = None) -> list[tuple[str, Any]]:
        """Call every implementation on its own (awaiting async ones); a raising plugin is counted
        and skipped. A plugin sees personal data (card, ID and phone numbers, e-mail addresses)
        only if it declares ``needs_personal_data = True``; the others get the masked copies,
        which ``masked`` makes (once, and only when such a plugin is called: masking is most of
        the cost of asking no plugin at all).
        ``first``: stop at the first answer (firstresult hooks); ``only``: call that plugin alone;
        ``active``: the name of a plugin attribute that, when false, says the plugin has nothing to
        do for this hook as configured (it is skipped, and nothing is masked for it)."""
        results = []
        masked_args: dict[str, Any] | None = None
        for plugin_name, fn in self._impls(hook_name):
            if only is not None and plugin_name != only:
                continue
            if active is not None and not getattr(self.pm.get_plugin(plugin_name), active, True):
                continue
            if self._needs_personal_data(plugin_name):
                args = full
            else:
                if masked_args is None:
                    masked_args = masked()
                args = masked_args
            try:
                value = fn(**args)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                self._failed(plugin_name, hook_name, exc)
                continue
            if value is not None:
                results.append((plugin_name, value))
                if first:
                    break
        return results

    def _failed(self, plugin_name: str, hook_name: str, exc: BaseException) -> None:
        self.errors[plugin_name] += 1
        log.error("plugin %s failed in %s: %s: %s", plugin_name, hook_name, type(exc).__name__, exc)

    def _call_each_sync(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation on its own; a raising plugin is counted and skipped. For the
        hooks that must answer at once (``SYNC_HOOKS``: routes, pollers, senders). ``async def``
        implementations are refused at registration; one that still answers with an awaitable (a
        plain function handing back a coroutine) is counted as failed, never taken as its answer.
        Every implementation is asked, also after a usable answer: a broken one is counted
        whichever plugin answered first."""
        results = []
        for plugin_name, fn in self._impls(hook_name):
            try:
                value = fn(**kwargs)
            except Exception as exc:
                self._failed(plugin_name, hook_name, exc)
                continue
            if value is None:  # (most answers: "not mine")
                continue
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()  # never awaited, on purpose: no "never awaited" warning
                self._failed(plugin_name, hook_name, TypeError(
                    "answered with an awaitable; this hook must answer at once (a plain def)"))
                continue
            results.append((plugin_name, value))
        return results

    def routes(self, services: GatewayServices) -> list[tuple[str, RouteMount]]:
        mounts = []
        for name, mount in self._call_each_sync("gateway_routes", services=services):
            if not isinstance(mount, RouteMount):
                self._failed(name, "gateway_routes", TypeError(f"returned {type(mount).__name__}, not RouteMount"))
                continue
            mounts.append((name, mount))
        refuse_shared_paths(mounts)
        return mounts

    def pollers(self, services: GatewayServices) -> list[tuple[str, Poller]]:
        found = []
        for name, pollers in self._call_each_sync("gateway_pollers", services=services):
            found.extend((name, p) for p in pollers)
        return found

    def sender(self, channel: str, services: GatewayServices) -> Sender | None:
        for _name, sender in self._call_each_sync("channel_sender", channel=channel, services=services):
            return sender  # first non-None wins
        return None

    async def classify(self, message: InboundMessage) -> tuple[str, Classification] | None:
        found = await self._call_each_private("classify_message", {"message": message},
                                              lambda: {"message": masked_message(message)}, first=True)
        return found[0] if found else None

    async def fetch_evidence(self, evidence: Any, channel: str, services: GatewayServices) -> tuple[bytes, str] | None:
        """First plugin that serves ``channel`` fetches; its exceptions propagate (retry the job)."""
        for _name, fn in self._impls("fetch_evidence"):
            value = fn(evidence=evidence, channel=channel, services=services)
            if inspect.isawaitable(value):
                value = await value
            if value is not None:
                return value
        return None

    async def enrich(self, complaint: Complaint, message: InboundMessage, *,
                     only: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Every enricher's answer; ``only``: that plugin's alone (a lookup it asked to be tried
        again later, without asking the others a second time)."""
        return await self._call_each_private(
            "enrich_complaint", {"complaint": complaint, "message": message},
            lambda: {"complaint": masked_complaint(complaint), "message": masked_message(message)}, only=only,
            active="enriching")

    async def emit(self, event: ComplaintEvent, complaint: Complaint) -> None:
        """One event to every listener: ``complaint_event``, or, for a plugin that implements only
        ``complaint_events``, that with a batch of one. A listener that raises is counted."""
        await self._call_each_private("complaint_event", {"event": event, "complaint": complaint},
                                      lambda: {"event": event, "complaint": masked_complaint(complaint)})
        single = self._hook_plugins("complaint_event")
        for plugin_name, fn in self._impls("complaint_events"):
            if plugin_name in single:
                continue
            complaints = {complaint.id: complaint if self._needs_personal_data(plugin_name)
                          else masked_complaint(complaint)}
            try:
                value = fn(events=[event], complaints=complaints)
                if inspect.isawaitable(value):
                    await value
            except Exception as exc:
                self._failed(plugin_name, "complaint_events", exc)

    async def emit_batch(self, events: list[ComplaintEvent], complaints: dict[str, Complaint]) -> list[str]:
        """Events, oldest first, to every listener: ``complaint_events`` once for the batch, or, for
        a plugin that implements only ``complaint_event``, that once per event, in order (one that
        raises is counted, and not asked again: that hook's contract). ``complaints`` by id, as they
        stand now. Answers the plugins whose ``complaint_events`` raised: the caller offers them
        the batch again later (each listener may see an event twice: at least once)."""
        refused: list[str] = []
        batch = self._hook_plugins("complaint_events")
        masked: dict[str, Complaint] | None = None
        for plugin_name, fn in self._impls("complaint_events"):
            if not self._listening(plugin_name):
                continue
            if self._needs_personal_data(plugin_name):
                given = complaints
            else:
                if masked is None:
                    masked = {cid: masked_complaint(c) for cid, c in complaints.items()}
                given = masked
            try:
                value = fn(events=list(events), complaints=given)
                if inspect.isawaitable(value):
                    await value
            except Exception as exc:
                self._failed(plugin_name, "complaint_events", exc)
                refused.append(plugin_name)
        for plugin_name, fn in self._impls("complaint_event"):
            if plugin_name in batch or not self._listening(plugin_name):
                continue
            personal = self._needs_personal_data(plugin_name)
            for event in events:
                complaint = complaints[event.complaint_id]
                if not personal:
                    if masked is None:
                        masked = {cid: masked_complaint(c) for cid, c in complaints.items()}
                    complaint = masked[event.complaint_id]
                try:
                    value = fn(event=event, complaint=complaint)
                    if inspect.isawaitable(value):
                        await value
                except Exception as exc:
                    self._failed(plugin_name, "complaint_event", exc)
        return refused

    def _hook_plugins(self, hook_name: str) -> set[str]:
        return {impl.plugin_name for impl in getattr(self.pm.hook, hook_name).get_hookimpls()}

    def _listening(self, plugin_name: str) -> bool:
        return bool(getattr(self.pm.get_plugin(plugin_name), "listening", True))

    @property
    def has_listeners(self) -> bool:
        """Whether any plugin listens to complaint events (no listener: no event jobs)."""
        return any(self._listening(name) for hook in ("complaint_event", "complaint_events")
                   for name in self._hook_plugins(hook))

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": p.name, "source": p.source, "target": p.target, "hooks": p.hooks}
            for p in self.loaded.values()
        ]


_PERSONAL_CONTACTS = frozenset({"phone", "email", "wa_id"})


def refuse_shared_paths(mounts: list[tuple[str, RouteMount]]) -> None:
    """Two plugins that answer the same method on the same path stop start-up: one of them would
    silently never be called."""
    owners: dict[tuple[str, str], str] = {}
    for name, mount in mounts:
        prefix = f"/webhooks/{name}" if mount.prefix is None else mount.prefix
        for handler in mount.handlers:
            for path in getattr(handler, "paths", None) or {"/"}:
                full = "/" + "/".join(p for p in f"{prefix}/{path}".split("/") if p)
                for method in sorted(getattr(handler, "http_methods", None) or {"*"}):
                    other = owners.setdefault((method, full), name)
                    if other != name:
                        first, second = sorted((other, name))
                        raise PluginConfigError(f"plugins {first!r} and {second!r} both mount {method} {full}; "
                                                "give one of them another prefix (RouteMount(prefix=...)) or disable it")


def _masked_contact(contact: Any) -> Any:
    from normalizer.pii import mask_pii

    if contact.kind not in _PERSONAL_CONTACTS:
        return contact
    return msgspec.structs.replace(contact, value=mask_pii(contact.value) if contact.kind != "wa_id"
                                   else "···" + contact.value[-2:], display_name=None)


def masked_message(message: InboundMessage) -> InboundMessage:
    """A copy for plugins that do not need personal data."""
    from normalizer.pii import mask_pii

    return msgspec.structs.replace(
        message, text=mask_pii(message.text), sender=_masked_contact(message.sender),
        verified_contacts=[_masked_contact(c) for c in message.verified_contacts],
        subject=mask_pii(message.subject) if message.subject else message.subject)


def masked_complaint(complaint: Complaint) -> Complaint:
    from normalizer.pii import mask_pii

    copy = msgspec.structs.replace(complaint, contact=_masked_contact(complaint.contact))
    copy.messages = [msgspec.structs.replace(m, text=mask_pii(m.text)) for m in complaint.messages]
    copy.replies = [msgspec.structs.replace(r, text=mask_pii(r.text)) for r in complaint.replies]
    return copy
