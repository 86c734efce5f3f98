"""bounce reply parsing: tolerant reading of reply text and KumoMTA's one-line form."""

from __future__ import annotations

import pytest

from bounce.reply import ParsedReply, infer_status, parse_reply, reply_line


@pytest.mark.parametrize(("raw", "expected"), [
    ("550 5.1.1 No such user", ParsedReply(550, "5.1.1", "No such user")),
    ("550-5.1.1 The email account\r\n550-5.1.1 that you tried\r\n550 5.1.1 does not exist.",
     ParsedReply(550, "5.1.1", "The email account that you tried does not exist.")),
    ("smtp; 550 user unknown", ParsedReply(550, "", "user unknown")),
    ("SMTP;  550 'a@b.example' is not a\n  registered gateway user",
     ParsedReply(550, "", "'a@b.example' is not a registered gateway user")),
    ("553 sorry, no mailbox here by that name. (#5.1.1)",
     ParsedReply(553, "", "sorry, no mailbox here by that name. (#5.1.1)", "5.1.1")),
    ("5.1.1 bad mailbox", ParsedReply(None, "5.1.1", "bad mailbox")),
    ("user unknown", ParsedReply(None, "", "user unknown")),
    ("550 #5.1.0 Address rejected.", ParsedReply(550, "", "#5.1.0 Address rejected.", "5.1.0")),
    ("452 4.2.2", ParsedReply(452, "4.2.2", "")),
    ("550 Requested action not taken: version 5.1.2 of the policy",
     ParsedReply(550, "", "Requested action not taken: version 5.1.2 of the policy", "5.1.2")),
    ("451 temporary failure, 5.1.1 not used", ParsedReply(451, "", "temporary failure, "
                                                          "5.1.1 not used")),
])
def test_parse_reply(raw: str, expected: ParsedReply) -> None:
    assert parse_reply(raw) == expected


def test_reply_line() -> None:
    assert reply_line(550, "5.1.1", "No  such\n user") == "550 5.1.1 No such user"
    assert reply_line(550, "", "No such user") == "550 No such user"
    assert reply_line(None, "4.2.2", "full") == "451 4.2.2 full"
    assert reply_line(None, "", "just text") == "just text"


def test_status_of_a_category() -> None:
    assert infer_status("InvalidRecipient", "5") == "5.1.1"
    assert infer_status("QuotaIssues", "4") == "4.2.2"
    assert infer_status("SomethingNew", "5") == "5.0.0"
