import pytest

from normalizer.contacts import InvalidContact, e164, implied_contacts, normalise, parse_label
from normalizer.schema import Contact


@pytest.mark.parametrize("raw", ["13800138000", "138 0013 8000", "+86 138-0013-8000", "008613800138000",
                                 "+8613800138000", "１３８００１３８０００"])
def test_chinese_mobiles_in_every_spelling_are_one_number(raw):
    assert e164(raw) == "+8613800138000"


def test_foreign_numbers_keep_their_country():
    assert e164("+44 20 7946 0958") == "+442079460958"
    assert e164("(415) 555-2671", region="US") == "+14155552671"


@pytest.mark.parametrize("kind, value", [("phone", "12"), ("phone", "call me"), ("email", "not-an-address"),
                                         ("telegram", "bad id with spaces")])
def test_what_cannot_be_a_contact_is_refused(kind, value):
    with pytest.raises(InvalidContact):
        normalise(Contact(kind=kind, value=value))


def test_email_is_case_folded_and_ids_kept():
    assert normalise(Contact(kind="email", value=" Li.Lei@Example.COM ")).value == "li.lei@example.com"
    assert normalise(Contact(kind="wechat_openid", value="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")).value == \
        "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    assert normalise(Contact(kind="wa_id", value="+86 13800138000")).value == "8613800138000"


def test_a_whatsapp_id_vouches_for_its_phone_number():
    assert implied_contacts(Contact(kind="wa_id", value="8613800138000")) == [
        Contact(kind="phone", value="+8613800138000")]
    assert implied_contacts(Contact(kind="telegram", value="12345")) == []
    assert parse_label("phone:13800138000") == Contact(kind="phone", value="+8613800138000")
