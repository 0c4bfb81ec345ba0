"""One spelling per contact, so that the same person is the same key on every channel: phone
numbers in E.164 (``phonenumbers``), e-mail addresses case-folded, provider ids trimmed.

Contact kinds: ``phone``, ``email``, ``app_user``, ``wa_id`` (WhatsApp), ``psid`` (Messenger),
``igsid`` (Instagram), ``telegram``, ``wechat_openid``.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from normalizer.schema import Contact

KINDS = ("phone", "email", "app_user", "wa_id", "psid", "igsid", "telegram", "wechat_openid")
DEFAULT_REGION = "CN"  # a number written without a country code is taken as Chinese
_ID = re.compile(r"^[A-Za-z0-9._:@+=-]{1,128}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")


class InvalidContact(ValueError):
    pass


def e164(number: str, region: str = DEFAULT_REGION) -> str:
    """``+8613800138000`` for "138 0013 8000", "+86-138-0013-8000", "008613800138000" ...;
    raises ``InvalidContact`` for what is not a possible phone number."""
    raw = unicodedata.normalize("NFKC", number).strip()
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    try:
        parsed = phonenumbers.parse(raw, None if raw.startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidContact(f"not a phone number: {exc}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidContact("not a possible phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalise(contact: Contact, region: str = DEFAULT_REGION) -> Contact:
    """The contact in its one spelling (display name kept); ``InvalidContact`` when it cannot be one."""
    kind, value = contact.kind.strip().lower(), unicodedata.normalize("NFKC", contact.value).strip()
    if kind == "phone":
        value = e164(value, region)
    elif kind == "wa_id":  # WhatsApp's id is the phone number in digits, without the +
        value = e164("+" + value.lstrip("+"), region)[1:]
    elif kind == "email":
        value = value.casefold()
        if not _EMAIL.match(value):
            raise InvalidContact("not an e-mail address")
    elif not _ID.match(value):
        raise InvalidContact(f"{kind}: not a valid id")
    if (kind, value) == (contact.kind, contact.value):
        return contact
    return Contact(kind=kind, value=value, display_name=contact.display_name)


def normalise_or_keep(contact: Contact, region: str = DEFAULT_REGION) -> Contact:
    """For contacts a provider asserts: normalised where possible, else as given (never lost)."""
    try:
        return normalise(contact, region)
    except InvalidContact:
        return contact


def implied_contacts(contact: Contact) -> list[Contact]:
    """Contacts a verified channel vouches for beyond its own id: a WhatsApp id is the phone
    number WhatsApp verified."""
    if contact.kind == "wa_id" and contact.value.isdigit():
        try:
            return [Contact(kind="phone", value=e164("+" + contact.value))]
        except InvalidContact:
            return []
    return []


def label(contact: Contact) -> str:
    return f"{contact.kind}:{contact.value}"


def parse_label(text: str) -> Contact:
    kind, sep, value = text.partition(":")
    if not sep or not value:
        raise InvalidContact("a contact is written kind:value")
    return normalise(Contact(kind=kind, value=value))
