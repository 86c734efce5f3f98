"""Bounce category names.

KumoMTA's 29 predefined classification names (exact spelling, from its bounce-classify
crate), plus Petrel's ``NotBounce`` for messages that are not bounces and ``FeedbackReport``
for RFC 5965 complaints (``AutoReply`` already exists in KumoMTA's set). Rule files may use
other names: a category is any string, these are the ones Petrel knows the meaning of.
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    InvalidRecipient = "InvalidRecipient"
    DNSFailure = "DNSFailure"
    SpamBlock = "SpamBlock"
    SpamContent = "SpamContent"
    ProhibitedAttachment = "ProhibitedAttachment"
    RelayDenied = "RelayDenied"
    AutoReply = "AutoReply"
    TransientFailure = "TransientFailure"
    Subscribe = "Subscribe"
    Unsubscribe = "Unsubscribe"
    ChallengeResponse = "ChallengeResponse"
    BadConfiguration = "BadConfiguration"
    BadConnection = "BadConnection"
    BadDomain = "BadDomain"
    ContentRelated = "ContentRelated"
    InactiveMailbox = "InactiveMailbox"
    InvalidSender = "InvalidSender"
    MessageExpired = "MessageExpired"
    NoAnswerFromHost = "NoAnswerFromHost"
    PolicyRelated = "PolicyRelated"
    ProtocolErrors = "ProtocolErrors"
    QuotaIssues = "QuotaIssues"
    RelayingIssues = "RelayingIssues"
    RoutingErrors = "RoutingErrors"
    SpamRelated = "SpamRelated"
    VirusRelated = "VirusRelated"
    AuthenticationFailed = "AuthenticationFailed"
    TooManyRecipients = "TooManyRecipients"
    Uncategorized = "Uncategorized"
    # Petrel's additions.
    NotBounce = "NotBounce"
    FeedbackReport = "FeedbackReport"


KUMOMTA_CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)[:29]
PETREL_CATEGORIES: tuple[str, ...] = (*KUMOMTA_CATEGORIES, "NotBounce", "FeedbackReport")

# Categories meaning the address itself will not accept mail again: candidates for
# suppression after a permanent failure.
HARD_RECIPIENT_CATEGORIES: frozenset[str] = frozenset({
    Category.InvalidRecipient, Category.InactiveMailbox, Category.BadDomain,
})

# The enhanced status a category stands for when a bounce gives none (class comes from the
# reply code or the DSN action).
DEFAULT_STATUS_DETAIL: dict[str, str] = {
    Category.InvalidRecipient: "1.1",
    Category.BadDomain: "1.2",
    Category.InactiveMailbox: "2.1",
    Category.QuotaIssues: "2.2",
    Category.InvalidSender: "1.7",
    Category.DNSFailure: "4.3",
    Category.NoAnswerFromHost: "4.1",
    Category.BadConnection: "4.2",
    Category.RoutingErrors: "4.4",
    Category.MessageExpired: "4.7",
    Category.TransientFailure: "0.0",
    Category.ProtocolErrors: "5.0",
    Category.TooManyRecipients: "5.3",
    Category.RelayDenied: "7.1",
    Category.RelayingIssues: "7.1",
    Category.SpamBlock: "7.1",
    Category.SpamContent: "7.1",
    Category.SpamRelated: "7.1",
    Category.PolicyRelated: "7.1",
    Category.AuthenticationFailed: "7.1",
    Category.VirusRelated: "7.1",
    Category.ProhibitedAttachment: "7.1",
    Category.ContentRelated: "6.0",
    Category.BadConfiguration: "3.5",
    Category.Uncategorized: "0.0",
}
