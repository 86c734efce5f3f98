"""The scheduler service: queue state for every message in the spool, in memory.

It splits each message into delivery jobs (one per recipient domain), keeps them in scheduled
queues (``campaign:tenant@domain``) until they are due and in ready queues per destination
site while they wait for an egress worker, hands them out over the ``Dispatch`` stream within
each worker's credit and each site's ``connection_limit``, and turns results into events,
retries with backoff and, at a final disposition, the message's removal from the spool.
It handles metadata only; the spool owns the bytes and is the source the queues are rebuilt
from after a restart.
"""
