"""egress: stateless delivery workers.

A worker takes delivery tasks from the scheduler's ``Dispatch`` stream (granting credit so it
is never handed more than it can hold), reads each message body from the spool, resolves the
destination with ``petrel.routing``, speaks SMTP to the remote host (opportunistic or required
STARTTLS, connections reused across messages to one site, a timeout on every step), has the
bounce service classify failed replies, and reports one result per recipient back on the same
stream. Workers keep no state that outlives a task: any number may run against one scheduler.
"""
