"""WeChat official accounts: ``GET, POST /webhooks/wechat`` in, the customer-service message API out.

One module, one shape: settings, verify (``signature`` = sha1 of the sorted token, timestamp and
nonce; in safe mode ``msg_signature`` over the ciphertext too; the timestamp must be fresh),
parse (plain XML, or safe mode: AES-256-CBC with the EncodingAESKey, our appid checked), send.

WeChat waits 5 seconds for an answer and then retries (three times in all). We answer at once:
``success`` for customer messages (the acknowledgement, which needs the case number the worker
allocates, follows through the customer-service API), or a passive reply, encrypted in safe mode,
for a subscription (the welcome) and a status question ("进度 C-…"). ``MsgId`` — or FromUserName +
CreateTime for events — makes the retries harmless. The access token is fetched once for all
processes, cached in Redis and refreshed before it expires. The stable contact id is the openid.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
from typing import Any
from xml.etree.ElementTree import Element

import httpx
import msgspec
from defusedxml import ElementTree as SafeET
from litestar import Request, Response, get, post

from plugins.kit import (
    Contact,
    DeliveryResult,
    EvidenceLink,
    GatewayServices,
    InputRejected,
    OutboundMessage,
    ProblemError,
    RouteMount,
    bounded_body,
    build_message,
    check_fresh,
    clean_text,
    hookimpl,
    http_failure,
    new_id,
    note_inbound,
    quarantine_once,
    raise_if_transient,
    require_configured,
    same_secret,
    tls,
)
from plugins.webhooks import payload_digest
from plugins.locks import RedisLock
from normalizer.status import parse_status_query, status_text
from normalizer.text import split_text

CHANNEL = "wechat"
MEDIA_SCHEME = "wechat-media:"
TEXT_LIMIT = 600
#: errcodes meaning "this access token is no good": fetch a new one and try once more.
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
#: errcodes worth retrying later: system busy, API frequency limit.
RETRYABLE_ERRORS = frozenset({-1, 45009, 45011})
WELCOME = ("感谢关注！请直接发送文字、图片或语音描述您的问题，我们会给您一个案件编号。"
           "查询进度请发送“进度 案件编号”。 Thank you for following us: describe your problem here and we will "
           "give you a case number.")


class WeChatSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: The Token set in the official account's server configuration (WECHAT_TOKEN).
    token: str = ""
    #: The account's AppID (WECHAT_APPID); safe-mode messages must name it.
    app_id: str = ""
    #: The AppSecret, for the access token (WECHAT_APPSECRET).
    app_secret: str = ""
    #: Used while ``app_id`` / ``app_secret`` are empty: the same values under their earlier
    #: names (WECHAT_APP_ID, WECHAT_APP_SECRET).
    app_id_fallback: str = ""
    app_secret_fallback: str = ""
    #: The 43-character EncodingAESKey for safe mode ("" = plain mode only) (WECHAT_AES_KEY).
    encoding_aes_key: str = ""
    api_base: str = "https://api.weixin.qq.com"
    #: A signed timestamp further than this from our clock is refused (replay protection).
    max_age_seconds: int = 300
    #: Refresh the cached access token when it has fewer seconds than this left.
    token_refresh_margin_seconds: int = 600
    max_body_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        self.app_id = self.app_id or self.app_id_fallback
        self.app_secret = self.app_secret or self.app_secret_fallback


# -- signatures and safe mode ---------------------------------------------------------------


def sha1_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


class Crypto:
    """WeChat's message encryption: AES-256-CBC, key = base64(EncodingAESKey + "="), IV = the
    key's first 16 bytes, PKCS#7 padding to 32 bytes, plaintext = 16 random bytes + 4-byte
    big-endian length + message + appid."""

    def __init__(self, encoding_aes_key: str, app_id: str) -> None:
        try:
            key = base64.b64decode(encoding_aes_key + "=")
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ValueError("encoding_aes_key must be the 43-character EncodingAESKey")
        self.key, self.app_id = key, app_id

    def _cipher(self) -> Any:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def encrypt(self, text: str, *, random16: bytes | None = None) -> str:
        body = text.encode()
        plain = (random16 or os.urandom(16)) + struct.pack(">I", len(body)) + body + self.app_id.encode()
        pad = 32 - len(plain) % 32
        plain += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """The message, if it decrypts, is well padded and names our appid; else ValueError."""
        try:
            data = base64.b64decode(ciphertext, validate=True)
        except ValueError:
            raise ValueError("Encrypt is not base64") from None
        if not data or len(data) % 16:
            raise ValueError("Encrypt is not whole AES blocks")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= 32 or plain[-pad:] != bytes([pad]) * pad:
            raise ValueError("bad padding")
        plain = plain[:-pad]
        if len(plain) < 20:
            raise ValueError("too short")
        (length,) = struct.unpack(">I", plain[16:20])
        message, app_id = plain[20:20 + length], plain[20 + length:]
        if len(message) != length:
            raise ValueError("length field does not match")
        if app_id.decode(errors="replace") != self.app_id:
            raise ValueError("the message is for another appid")
        return message.decode()


def encrypted_reply(crypto: Crypto, token: str, reply_xml: str, timestamp: str, nonce: str) -> str:
    encrypted = crypto.encrypt(reply_xml)
    signature = sha1_signature(token, timestamp, nonce, encrypted)
    return (f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt><MsgSignature><![CDATA[{signature}]]></MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>")


def cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_reply(to_user: str, from_user: str, content: str) -> str:
    return (f"<xml><ToUserName>{cdata(to_user)}</ToUserName><FromUserName>{cdata(from_user)}</FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content>{cdata(content)}</Content></xml>")


def parse_xml(data: bytes | str) -> dict[str, str]:
    """A flat WeChat message as a dict; defusedxml refuses entities and DTDs (XXE, billion laughs)."""
    root: Element = SafeET.fromstring(data)
    if root.tag != "xml":
        raise ValueError("the root element is not <xml>")
    return {child.tag: (child.text or "").strip() for child in root}


# -- the plugin -----------------------------------------------------------------------------


class WeChatChannel:
    """The built-in WeChat official-account plugin."""

    Settings = WeChatSettings

    def __init__(self, settings: WeChatSettings | None = None) -> None:
        self.settings = settings or WeChatSettings()
        self.crypto = Crypto(self.settings.encoding_aes_key, self.settings.app_id) \
            if self.settings.encoding_aes_key else None

    def _check_signature(self, q: Any) -> None:
        require_configured(self.settings.token, "WECHAT_TOKEN")
        timestamp, nonce = q.get("timestamp", ""), q.get("nonce", "")
        if not same_secret(q.get("signature", ""), sha1_signature(self.settings.token, timestamp, nonce)):
            raise ProblemError(403, "signature_invalid", "signature does not match.")
        check_fresh(timestamp, self.settings.max_age_seconds)

    @hookimpl
    def gateway_routes(self, services: GatewayServices) -> RouteMount:
        settings = self.settings

        @get("", operation_id="wechatVerify", summary="WeChat: server URL verification", tags=["webhooks"],
             media_type="text/plain")
        async def verify(request: Request[Any, Any, Any]) -> Response[str]:
            self._check_signature(request.query_params)
            return Response(request.query_params.get("echostr", ""), media_type="text/plain")

        @post("", operation_id="wechatIn", summary="WeChat: a message or event", tags=["webhooks"], status_code=200)
        async def receive(request: Request[Any, Any, Any]) -> Response[str]:
            q = request.query_params
            self._check_signature(q)
            body = await bounded_body(request, settings.max_body_bytes)
            safe = q.get("encrypt_type") == "aes"
            try:
                outer = parse_xml(body)
            except Exception as exc:  # signed but not XML: keep it, answer so WeChat stops retrying
                await quarantine_once(services, CHANNEL, f"unparseable XML: {type(exc).__name__}", body)
                return Response("success", media_type="text/plain")
            if safe:
                if self.crypto is None:
                    raise ProblemError(503, "channel_not_configured", "Safe mode needs WECHAT_AES_KEY.")
                encrypted = outer.get("Encrypt", "")
                expected = sha1_signature(settings.token, q.get("timestamp", ""), q.get("nonce", ""), encrypted)
                if not encrypted or not same_secret(q.get("msg_signature", ""), expected):
                    raise ProblemError(403, "signature_invalid", "msg_signature does not match.")
                try:
                    inner = self.crypto.decrypt(encrypted)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise ProblemError(403, "decryption_failed", f"The message does not decrypt for this "
                                       f"account: {exc}") from None
                try:
                    fields = parse_xml(inner)
                except Exception as exc:
                    await quarantine_once(services, CHANNEL, f"unparseable decrypted XML: {type(exc).__name__}",
                                          inner.encode(), identity=payload_digest(body))
                    return Response("success", media_type="text/plain")
            else:
                fields = outer
            reply = await self.take(services, fields, body)
            if reply is None:
                return Response("success", media_type="text/plain")
            xml = text_reply(fields.get("FromUserName", ""), fields.get("ToUserName", ""), reply)
            if safe and self.crypto is not None:
                xml = encrypted_reply(self.crypto, settings.token, xml, str(int(time.time())), os.urandom(8).hex())
            return Response(xml, media_type="application/xml")

        return RouteMount(handlers=[verify, receive], prefix="/webhooks/wechat")

    async def take(self, services: GatewayServices, fields: dict[str, str], raw: bytes) -> str | None:
        """Take one decrypted message; answers the text of a passive reply, if one is due."""
        openid, kind, created = fields.get("FromUserName", ""), fields.get("MsgType", ""), fields.get("CreateTime", "")
        if not openid or not kind or not created.isdigit():
            await quarantine_once(services, CHANNEL, "FromUserName, MsgType or CreateTime missing", raw)
            return None
        sender = Contact(kind="wechat_openid", value=openid)
        if kind == "event":
            event = fields.get("Event", "").lower()
            return WELCOME if event == "subscribe" else None
        text, attachments = "", []
        try:
            if kind == "text":
                text = clean_text(fields.get("Content", ""), services.settings.max_text_chars)
                case_number = parse_status_query(text)
                if case_number:
                    complaint = await services.store.case_for_contact(case_number, sender)
                    return status_text(complaint, "zh" if complaint is None else complaint.language, case_number)
            elif kind in ("image", "voice", "video", "shortvideo"):
                media_id = fields.get("MediaId", "")
                if kind == "voice":  # WeChat's own speech recognition, when the account has it on
                    text = clean_text(fields.get("Recognition", ""), services.settings.max_text_chars)
                content_type = {"image": "image/jpeg", "voice": f"audio/{fields.get('Format', 'amr').lower()}",
                                "video": "video/mp4", "shortvideo": "video/mp4"}[kind]
                if media_id:
                    attachments.append(EvidenceLink(id=f"ev_pending_{kind}", sha256="", content_type=content_type,
                                                    size=0, source=CHANNEL, remote_url=MEDIA_SCHEME + media_id))
            elif kind == "location":
                text = clean_text(fields.get("Label", ""), services.settings.max_text_chars)
            elif kind == "link":
                text = clean_text(" ".join(filter(None, (fields.get("Title"), fields.get("Description"),
                                                         fields.get("Url")))), services.settings.max_text_chars)
            else:
                return None
        except InputRejected as exc:
            await quarantine_once(services, CHANNEL, str(exc), raw, identity=fields.get("MsgId") or f"{openid}:{created}")
            return None
        if not text and not attachments:
            return None
        msg_id = fields.get("MsgId") or f"{openid}:{created}"
        message = build_message(
            message_id=new_id("msg"), channel=CHANNEL, sender=sender, text=text, provider_message_id=msg_id,
            attachments=attachments, metadata={"to": fields.get("ToUserName", ""), "msg_type": kind},
            language="zh" if not text else None,
        )
        await note_inbound(services, CHANNEL, openid, int(created) * 1000)  # before a worker can answer
        await services.intake.submit(message, idempotency_scope=f"msg:{msg_id}", raw=raw)
        return None

    @hookimpl
    def channel_sender(self, channel: str, services: GatewayServices) -> "WeChatSender | None":
        if channel != CHANNEL or not (self.settings.app_id and self.settings.app_secret):
            return None
        return WeChatSender(self.settings, services)

    @hookimpl
    async def fetch_evidence(self, evidence: EvidenceLink, channel: str,
                             services: GatewayServices) -> tuple[bytes, str] | None:
        if channel != CHANNEL or not (evidence.remote_url or "").startswith(MEDIA_SCHEME):
            return None
        tokens = AccessTokens(self.settings, services)
        media_id = evidence.remote_url[len(MEDIA_SCHEME):]
        for attempt in range(2):
            token = await tokens.get(force=attempt > 0)
            async with httpx.AsyncClient(verify=tls(), timeout=30) as http:
                response = await http.get(f"{self.settings.api_base.rstrip('/')}/cgi-bin/media/get",
                                          params={"access_token": token, "media_id": media_id})
            raise_if_transient(response, "WeChat")
            if response.headers.get("content-type", "").startswith(("application/json", "text/plain")):
                code = (response.json() or {}).get("errcode")
                if code in TOKEN_ERRORS:
                    continue
                if code in RETRYABLE_ERRORS:
                    raise RuntimeError(f"WeChat errcode {code}")
                return None  # 40007 invalid media id (expired after 3 days) and the like
            return response.content, response.headers.get("content-type", evidence.content_type).split(";")[0]
        return None


class AccessTokens:
    """One access token for every process: cached in Redis with its expiry, fetched under a
    short Redis lock so that many workers do not each fetch (a new token retires the old one
    within minutes), and refreshed when less than the margin is left."""

    def __init__(self, settings: WeChatSettings, services: GatewayServices) -> None:
        self.settings = settings
        self.redis = services.require_redis()
        keys = services.store.keys
        self.key = keys.plugin("wechat", "token", settings.app_id)
        self.lock = RedisLock(self.redis, keys.plugin("wechat", "token-lock", settings.app_id), 10_000)

    async def get(self, *, force: bool = False) -> str:
        token, ttl = None, -2
        for _ in range(50):
            if not force:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.get(self.key)
                    pipe.ttl(self.key)
                    token, ttl = await pipe.execute()
                if token is not None and ttl > self.settings.token_refresh_margin_seconds:
                    return token.decode()
            if await self.lock.acquire():
                try:
                    return await self._fetch()
                finally:
                    await self.lock.release()
            if not force and token is not None and ttl > 0:
                return token.decode()  # someone is refreshing; the old one is still good
            force = False
            await asyncio.sleep(0.1)
        raise RuntimeError("WeChat access token: another process holds the refresh lock for too long")

    async def _fetch(self) -> str:
        async with httpx.AsyncClient(verify=tls(), timeout=15) as http:
            response = await http.get(f"{self.settings.api_base.rstrip('/')}/cgi-bin/token", params={
                "grant_type": "client_credential", "appid": self.settings.app_id, "secret": self.settings.app_secret})
        body = response.json() if response.status_code < 500 else {}
        token = body.get("access_token")
        if not token:
            raise RuntimeError(f"WeChat token endpoint answered {response.status_code} errcode {body.get('errcode')}")
        await self.redis.set(self.key, token, ex=max(60, int(body.get("expires_in", 7200))))
        return str(token)


class WeChatSender:
    """The customer-service message API (open for 48 hours after the customer last wrote)."""

    def __init__(self, settings: WeChatSettings, services: GatewayServices) -> None:
        self.settings = settings
        self.tokens = AccessTokens(settings, services)

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        url = f"{self.settings.api_base.rstrip('/')}/cgi-bin/message/custom/send"
        for part in split_text(message.text, TEXT_LIMIT):
            body = {"touser": message.to.value, "msgtype": "text", "text": {"content": part}}
            result = await self._post(url, body)
            if result is not None:
                return result
        return DeliveryResult(status="sent")

    async def _post(self, url: str, body: dict[str, Any]) -> DeliveryResult | None:
        for attempt in range(2):
            try:
                token = await self.tokens.get(force=attempt > 0)
                async with httpx.AsyncClient(verify=tls(), timeout=15) as http:
                    response = await http.post(url, params={"access_token": token},
                                               content=msgspec.json.encode(body),  # UTF-8 as is, not \\u escapes
                                               headers={"Content-Type": "application/json"})
            except (httpx.HTTPError, RuntimeError) as exc:
                return http_failure(None, exc)
            if response.status_code >= 400:
                return http_failure(response)
            code = (response.json() or {}).get("errcode", 0)
            if code == 0:
                return None
            if code in TOKEN_ERRORS and attempt == 0:
                continue
            return DeliveryResult(status="failed", error=f"WeChat errcode {code}: {response.json().get('errmsg', '')}"
                                  [:200], retryable=code in RETRYABLE_ERRORS)
        return DeliveryResult(status="failed", error="WeChat refused two access tokens", retryable=True)


__all__ = ["WeChatChannel", "WeChatSettings", "Crypto", "sha1_signature", "parse_xml", "encrypted_reply"]
