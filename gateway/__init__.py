"""gateway: the REST/JSON front door, translating HTTP requests into gRPC calls.

* ``POST /api/inject/v1`` (KumoMTA-compatible): one message per recipient, built from a raw
  RFC 5322 template or from a message builder, templated with Jinja, sent to ingress over one
  ``InjectService.InjectMessages`` stream per request; per-recipient results.
* ``GET /api/queue-summary/v1`` (scheduler), ``GET /api/admin/inspect-message/v1`` (spool and
  scheduler), ``/metrics``, ``/healthz`` and ``/api/check-liveness/v1`` (ingress health),
  ``/api-docs/openapi.json``.

The gateway is stateless: any number of replicas may run behind a load balancer.
"""
