"""bounce message analysis: KumoMTA's reference DSNs and feedback reports, prose bounces,
auto-replies and ordinary mail, and the accuracy targets on Petrel's own corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from bounce.accuracy import TARGETS, evaluate
from bounce.classifier import ReplyClassifier
from bounce.message import MessageAnalyser, MessageResult

DATA = Path(__file__).parents[1] / "data" / "bounces"
KUMOMTA = DATA / "kumomta"


@pytest.fixture(scope="module")
def analyser() -> MessageAnalyser:
    return MessageAnalyser(ReplyClassifier.from_files())


def _analyse(analyser: MessageAnalyser, text: str) -> MessageResult:
    return analyser.analyse(text.replace("\n", "\r\n").encode())


# (file, kind, [(recipient, status)], first recipient's category)
REFERENCE = [
    ("dsn_1.eml", "dsn", [("louisl@larry.slip.umd.edu", "4.0.0")], "MessageExpired"),
    ("dsn_2.eml", "dsn", [("arathib@vnet.ibm.com", "5.0.0"), ("johnh@hpnjld.njd.hp.com", "4.0.0"),
                          ("wsnell@sdcc13.ucsd.edu", "5.0.0")], "InvalidRecipient"),
    ("dsn_3.eml", "dsn", [("nair_s", "5.0.0")], "InvalidRecipient"),
    ("dsn_4.eml", "dsn", [("thomas@de-montfort.ac.uk", "4.0.0")], "TransientFailure"),
    ("dsn_5.eml", "dsn", [("recipient@domain.com", "5.0.0")], "QuotaIssues"),
    ("dsn_6.eml", "dsn", [("redacted@example.com", "5.0.0")], "InvalidRecipient"),
    ("dsn_obsolete_arrival_date.eml", "dsn", [("user@example.com", "5.1.1")],
     "InvalidRecipient"),
    ("arf_1.eml", "arf", [], "FeedbackReport"),
    ("arf_2.eml", "arf", [("user@example.com", None)], "FeedbackReport"),
    ("arf_3.eml", "arf", [("user@example.com", None)], "FeedbackReport"),
    ("arf_4.eml", "arf", [("cb4a01a48251d4765f489076aa81e2a4@comcast.net", None)],
     "FeedbackReport"),
]


@pytest.mark.parametrize(("name", "kind", "recipients", "category"), REFERENCE)
def test_reference_samples(analyser: MessageAnalyser, name: str, kind: str,
                           recipients: list[tuple[str, str | None]], category: str) -> None:
    result = analyser.analyse((KUMOMTA / name).read_bytes())
    assert result.kind == kind
    assert [(r.address, r.status or None) for r in result.recipients] == recipients
    assert result.category == category
    out = result.as_dict()
    assert out["recipient"] == (recipients[0][0] if recipients else None)
    assert out["status"] == (recipients[0][1] if recipients else None)


def test_every_reference_sample_is_covered() -> None:
    assert {p.name for p in KUMOMTA.glob("*.eml")} == {name for name, *_ in REFERENCE}


def test_reference_arf_details(analyser: MessageAnalyser) -> None:
    result = analyser.analyse((KUMOMTA / "arf_2.eml").read_bytes())
    assert result.feedback is not None
    assert result.feedback.feedback_type == "abuse"
    assert result.feedback.source_ip == "192.0.2.1"
    assert result.feedback.original_mail_from == "somespammer@example.net"
    assert result.feedback.reported_domain == "example.net"
    assert result.original_headers["x-kumoref"].startswith("eyJfQF8i")


def test_dsn_correlation_fields(analyser: MessageAnalyser) -> None:
    result = analyser.analyse((KUMOMTA / "dsn_6.eml").read_bytes())
    assert result.reporting_mta == "tls02.example.com"
    assert result.original_headers["subject"] == "[Bulk Mail] the subject"


def test_corpus_meets_accuracy_targets() -> None:
    report = evaluate(DATA)
    assert report.replies.total >= 300
    assert report.messages.total >= 150
    assert report.category_accuracy >= TARGETS["category_accuracy"], report.mistakes
    assert report.messages.accuracy >= TARGETS["category_accuracy"], report.mistakes
    assert report.recipient_accuracy >= TARGETS["recipient_accuracy"], report.mistakes


EXIM = """\
From: Mail Delivery System <Mailer-Daemon@mail.example.org>
To: news@shop.example
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: gone@dest.example

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  gone@dest.example
    host mx.dest.example [192.0.2.5]
    SMTP error from remote mail server after RCPT TO:<gone@dest.example>:
    550 5.1.1 <gone@dest.example>: Recipient address rejected: User unknown

Please contact postmaster@mail.example.org if you need help.

------ This is a copy of the message, including all the headers. ------

From: news@shop.example
To: gone@dest.example, other@dest.example
Subject: hi
"""


def test_prose_bounce_recipient_reply_and_status(analyser: MessageAnalyser) -> None:
    result = _analyse(analyser, EXIM)
    assert result.kind == "text-bounce"
    assert [r.address for r in result.recipients] == ["gone@dest.example"]
    first = result.recipients[0]
    assert (first.category, first.status) == ("InvalidRecipient", "5.1.1")
    assert first.diagnostic.startswith("550 5.1.1 <gone@dest.example>: Recipient address")


def test_prose_bounce_without_failed_recipients_header(analyser: MessageAnalyser) -> None:
    # The quoted original lists another recipient, the notification names the postmaster
    # and the sender: none of them failed.
    text = EXIM.replace("X-Failed-Recipients: gone@dest.example\n", "")
    text = text.replace("recipients. This", "recipients (sent by news@shop.example). This")
    result = _analyse(analyser, text)
    assert [r.address for r in result.recipients] == ["gone@dest.example"]


QMAIL = """\
From: MAILER-DAEMON@mail.example.net
To: news@shop.example
Subject: failure notice

Hi. This is the qmail-send program at mail.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<one@dest.example>:
Sorry, no mailbox here by that name. (#5.1.1)

<two@other.example>:
192.0.2.9 does not like recipient.
Remote host said: 552 5.2.2 Mailbox full
Giving up on 192.0.2.9.

--- Below this line is a copy of the message.

From: news@shop.example
To: one@dest.example, two@other.example
"""


def test_multiple_prose_recipients_get_their_own_reason(analyser: MessageAnalyser) -> None:
    result = _analyse(analyser, QMAIL)
    assert [(r.address, r.category, r.status) for r in result.recipients] == [
        ("one@dest.example", "InvalidRecipient", "5.1.1"),
        ("two@other.example", "QuotaIssues", "5.2.2"),
    ]


def test_forwarded_bounce_is_analysed_as_the_bounce(analyser: MessageAnalyser) -> None:
    text = ("From: someone@helpdesk.example\nTo: support@shop.example\nSubject: Fwd: failure\n"
            "\nPlease look at this.\n\n---------- Forwarded message ---------\n" + QMAIL)
    result = _analyse(analyser, text)
    assert result.kind == "text-bounce"
    assert result.recipients[0].address == "one@dest.example"


@pytest.mark.parametrize(("headers", "kind", "category"), [
    ("Auto-Submitted: auto-replied\nSubject: Re: hello\n", "autoreply", "AutoReply"),
    ("X-Autoreply: yes\nSubject: Re: hello\n", "autoreply", "AutoReply"),
    ("Subject: Automatic reply: hello\n", "autoreply", "AutoReply"),
    ("Subject: Out of Office: hello\n", "autoreply", "AutoReply"),
    ("Subject: Vacation photos\n", "not-bounce", "NotBounce"),
    ("Subject: Re: hello\n", "not-bounce", "NotBounce"),
    ("Subject: unsubscribe\n", "not-bounce", "Unsubscribe"),
])
def test_auto_replies_and_ordinary_mail(analyser: MessageAnalyser, headers: str, kind: str,
                                        category: str) -> None:
    text = (f"From: Ann Example <ann@dest.example>\nTo: news@shop.example\n{headers}\n"
            "I am away this week and back in the office on Monday.\n")
    result = _analyse(analyser, text)
    assert (result.kind, result.category) == (kind, category)
    expected = ["ann@dest.example"] if kind == "autoreply" else []
    assert [r.address for r in result.recipients] == expected


def test_not_a_bounce_even_with_bounce_words(analyser: MessageAnalyser) -> None:
    text = ("From: Parcel Service <noreply@parcel.example>\nTo: ann@dest.example\n"
            "Subject: Delivery attempt failed\n\nYour parcel could not be delivered today.\n")
    result = _analyse(analyser, text)
    assert (result.kind, result.recipients) == ("not-bounce", [])


def test_as_dict_contract(analyser: MessageAnalyser) -> None:
    out = _analyse(analyser, QMAIL).as_dict()
    assert list(out) == ["category", "kind", "recipients", "recipient", "status"]
    assert list(out["recipients"][0]) == ["address", "status", "category",  # type: ignore[index]
                                          "diagnostic"]
    assert (out["recipient"], out["status"], out["category"]) == (
        "one@dest.example", "5.1.1", "InvalidRecipient")
