"""What egress changes on the wire so a report about a message can be tied back to it.

``Stamper.envelope(task, body)`` returns the return path and the bytes to send: the ref
header (``bounce.ref_header``: our id, tenant and campaign) prepended to the stored message,
and with ``bounce.domain`` set and ``bounce.verp`` on, a VERP return path naming the id and
the original sender. Both formats: ``petrel.correlation``. The stored message and the
events keep the original sender; only the SMTP transaction sees the rewritten one.
"""

from __future__ import annotations

from dataclasses import dataclass

from petrel.config import BounceConfig
from petrel.correlation import Ref, ref_header, verp_address
from petrel.v1 import scheduler_pb2


@dataclass(frozen=True, slots=True)
class Stamper:
    header: str = ""
    secret: bytes = b""
    verp_domain: str = ""

    @classmethod
    def from_config(cls, config: BounceConfig) -> Stamper:
        return cls(header=config.ref_header, secret=config.ref_secret.get_secret_value().encode(),
                   verp_domain=config.domain if config.verp else "")

    def envelope(self, task: scheduler_pb2.DeliveryTask, body: bytes) -> tuple[str, bytes]:
        sender = verp_address(task.sender, task.message_id, self.verp_domain)
        if self.header:
            body = ref_header(self.header, Ref(task.message_id, task.tenant, task.campaign),
                              self.secret) + body
        return sender, body
