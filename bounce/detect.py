"""Telling what kind of message arrived when it has no report part to say so.

``bounce_score`` weighs the signs of a prose bounce (a mail-system sender, a bounce
subject, bounce wording, quoted SMTP replies); ``is_delay_notice`` recognises "still
trying" warnings; ``autoreply_kind`` recognises RFC 3834 automatic replies (headers first,
then out-of-office subjects) and challenge-response messages.
"""

from __future__ import annotations

import re
from email.message import Message

from bounce.addresses import find_addresses, is_role_address
from bounce.mime import header

_SENDER_NAME = re.compile(
    r"mail delivery|mailer[- _]?daemon|postmaster|mail administrator|delivery subsystem"
    r"|mail system|delivery status|microsoft outlook|microsoftexchange|mail router"
    r"|courier mail server|system administrator|mail server|mdaemon|internet mail delivery"
    r"|maildelivery|e-?mail delivery|nachrichtenübermittlung|sistema de correo"
    r"|système de messagerie|systeme de messagerie|sistema di posta", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|returned mail|delivery status notification|delivery failure"
    r"|failure notice|mail delivery failed|delivery failed|non-?deliver|could not be delivered"
    r"|couldn.t be delivered|delivery problem|mail system error|message status - undeliverable"
    r"|permanent delivery failure|mail delivery status|could not send message|delayed mail"
    r"|delivery delayed|delivery notification|failed delivery|unable to deliver"
    r"|returned to sender|delivery report|message delayed|warning: message|mail delivery failure"
    r"|delivery has failed|not delivered|undeliverable|notificación de estado de entrega"
    r"|unzustellbar|nicht zustellbar|zustellung fehlgeschlagen|non remis|non distribuable"
    r"|échec de (?:la )?remise|echec de (?:la )?remise|no se puede entregar|no entregado"
    r"|não (?:foi )?entregue|nao entregue|impossibile recapitare|non recapitabile"
    r"|onbestelbaar|niet bezorgd|не доставлено|недоставлен|配信不能|配送失敗|退信|无法投递"
    r"|rejected|bounced? (?:mail|message)|mail failure|error sending message", re.I)
_BOUNCE_BODY = re.compile(
    r"could not be delivered|couldn.t be delivered|wasn.t delivered|was not delivered"
    r"|were not delivered|has not been delivered|hasn.t been delivered|not yet been delivered"
    r"|delivery (?:has )?failed|permanent error|permanent fatal error|following address"
    r"|following recipient|cannot be reached|undeliverable|unable to deliver|unable to be delivered"
    r"|wasn.t able to deliver|was not able to deliver|delivery to the following|failed permanently"
    r"|returned to (?:the )?sender|could not deliver|couldn.t deliver|not be delivered"
    r"|delivery problems|did not reach|message not delivered|delivery is delayed|delivery delayed"
    r"|still being retried|delivery failure|delivery attempts|failed to deliver|non-?delivery"
    r"|rejected by the server|rejected your message|error occurred while trying to deliver"
    r"|user unknown|unknown user|no such user|mailbox (?:is )?full|over quota|host not found"
    r"|recipient (?:address )?rejected|address rejected|unknown recipient|invalid recipient"
    r"|mailbox unavailable|does not exist|not be delivered|was undeliverable|not reach"
    r"|nicht zugestellt|konnte nicht (?:zugestellt|ausgeliefert)|zustellung .{0,40}fehlgeschlagen"
    r"|remise .{0,60}a échoué|remise .{0,60}a echoue|n.a pas pu être remis|n.a pu etre envoy"
    r"|n.a pas pu etre remis|no se pudo entregar|error en la entrega|no pudo ser entregado"
    r"|falha na entrega|não foi possível entregar|nao foi possivel entregar|non è stato possibile"
    r"|recapito non riuscito|bezorging is mislukt|kon niet worden bezorgd|не может быть доставлено"
    r"|не удалось доставить|配信できませんでした|届けることができませんでした|无法投递|退回",
    re.I)
_BOUNCE_BANNER = re.compile(
    r"this is the qmail-send program|created automatically by mail delivery software"
    r"|this is the mail system at host|the original message was received at"
    r"|delivery to the following recipients? failed permanently"
    r"|i.m afraid i wasn.t able to deliver|delivery has failed to these recipients"
    r"|the following recipient\(s\) cannot be reached|this is a delivery status notification"
    r"|your message did not reach some or all of the intended recipients"
    r"|sorry, we were unable to deliver your message|message could not be delivered to"
    r"|the attached message had permanent fatal delivery errors"
    r"|an error occurred while trying to deliver the mail|\*\* address not found \*\*"
    r"|\*\* message not delivered|\*\* delivery incomplete \*\*|\*\* message blocked \*\*"
    r"|\*\* domain not found \*\*|\*\* mailbox full \*\*|diagnostic information for administrators"
    r"|this message was created automatically by the|undeliverable mail|unzustellbare nachricht"
    r"|the following message to .{1,100} was undeliverable", re.I)
_SMTP_REPLY = re.compile(r"(?:^|[\s:'\"(\[#>])[45]\d\d[ -](?:#?[45]\.\d{1,3}\.\d{1,3}\b|[A-Za-z<])",
                         re.M)

_DELAY = re.compile(
    r"delay(?:ed)?\b|not yet been delivered|still being retried|will (?:keep )?(?:retry|try)"
    r"|will continue|warning message only|warning: could not send|will be retried"
    r"|has not been delivered yet|hasn.t been delivered yet|not delivered yet"
    r"|temporarily deferred|delivery attempts will continue|retrying|still trying", re.I)
_DELAY_SUBJECT = re.compile(r"delay|warning|still being retried|not yet delivered"
                            r"|verzögert|retardé|retardado|ritardat", re.I)

_AUTO_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-autoreply-from",
                 "x-mail-autoreply", "x-vacation", "x-cr-hashedpuzzle", "x-auto-response")
# Subjects that say "automatic reply" by themselves.
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[- _]?(?:reply|response|answer|antwort|respuesta|risposta|réponse"
    r"|reponse)|auto:|autoreply|auto-reply|out of (?:the )?office|ooo\b"
    r"|abwesenheitsnotiz|automatische antwort|réponse automatique|reponse automatique"
    r"|respuesta automática|respuesta automatica|resposta automática|resposta automatica"
    r"|risposta automatica|automatisch antwoord|автоответ|自動応答|自动回复)", re.I)
_AUTO_BODY = re.compile(
    r"out of (?:the )?office|on vacation|on holiday|on leave|away from (?:the office|my desk)"
    r"|limited access to (?:my )?e-?mail|currently away|i am away|i.m away|will be back"
    r"|return(?:ing)? on|back in the office"
    r"|respond (?:to your (?:e-?mail|message) )?(?:as soon|when)"
    r"|automatic reply|auto-?reply|autoresponder|abwesend|absent du bureau|fuera de la oficina"
    r"|this is an automated (?:reply|response)|we have received your (?:e-?mail|message)"
    r"|thank you for (?:contacting|your (?:e-?mail|message))", re.I)
_CHALLENGE = re.compile(
    r"challenge|verify (?:that )?you are (?:a )?human|confirm (?:that )?you are|please confirm"
    r"|awaiting (?:your )?verification|approve (?:your|this) (?:e-?mail|message)|spam ?arrest"
    r"|boxbe|i use a (?:spam|junk) (?:filter|protection)|verification request|click (?:the|this) "
    r"link .{0,40}(?:deliver|verify|confirm)", re.I)


def sender_signal(msg: Message) -> bool:
    """The message comes from a mail system (MAILER-DAEMON, postmaster, "Mail Delivery
    Subsystem"...) or with a null return path."""
    sender = header(msg, "From")
    if _SENDER_NAME.search(sender):
        return True
    if any(is_role_address(a) for _, a in find_addresses(sender)):
        return True
    return header(msg, "Return-Path").strip() in ("<>", "<<>>")


def bounce_score(msg: Message, text: str) -> int:
    score = 0
    if sender_signal(msg):
        score += 2
    if _BOUNCE_SUBJECT.search(header(msg, "Subject")):
        score += 1
        if header(msg, "Auto-Submitted").lower().startswith("auto-"):
            score += 1
    if header(msg, "X-Failed-Recipients"):
        score += 2
    if _BOUNCE_BANNER.search(text):
        score += 2
    if _BOUNCE_BODY.search(text):
        score += 1
    if _SMTP_REPLY.search(text):
        score += 1
    return score


def is_delay_notice(msg: Message, text: str) -> bool:
    subject = header(msg, "Subject")
    if _DELAY_SUBJECT.search(subject) and not re.search(r"fail|undeliver|returned", subject,
                                                        re.I):
        return True
    return bool(_DELAY.search(text)) and not re.search(
        r"permanent|failed permanently|given up|giving up|could not be delivered|"
        r"couldn.t be delivered|undeliverable|wasn.t delivered|was not delivered|"
        r"delivery has failed|the following address(?:es)? failed", text, re.I)


def autoreply_kind(msg: Message, text: str) -> str:
    """"autoreply", "challenge" or "" (not an automatic reply)."""
    auto_submitted = header(msg, "Auto-Submitted").lower()
    precedence = (header(msg, "Precedence") + header(msg, "X-Precedence")).lower()
    subject = header(msg, "Subject")
    header_signal = (
        auto_submitted.startswith("auto-replied")
        or any(header(msg, name) and header(msg, name).lower() not in ("no", "false", "0")
               for name in _AUTO_HEADERS)
        or "auto_reply" in precedence or "auto-reply" in precedence
        or "autoresponder" in header(msg, "Delivered-To").lower()
    )
    generated = auto_submitted.startswith("auto-generated")
    body_signal = bool(_AUTO_BODY.search(text[:5000]))
    strong_subject = bool(_AUTO_SUBJECT.search(subject))
    if not (header_signal or strong_subject or (generated and body_signal)):
        return ""
    if _CHALLENGE.search(subject) or _CHALLENGE.search(text[:3000]):
        return "challenge"
    return "autoreply"
