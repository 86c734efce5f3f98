"""ingress: the front door of Petrel.

Receives mail over ESMTP (aiosmtpd) and the gRPC ``InjectService`` on one asyncio loop, applies
the reception policy (relay networks, AUTH, size and recipient limits, strict line endings),
stamps ``Received:`` / ``Message-ID:``, and answers ``250 2.0.0 <id>`` (or an inject success)
only after the spool acknowledged a durable write of the message and of its ``Reception``
records (one per recipient, built here, appended by the spool). The metadata is then enqueued
with the scheduler.
"""
