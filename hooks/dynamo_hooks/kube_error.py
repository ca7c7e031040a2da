"""The one exception type the hooks' Kubernetes API failures become, and its reasons. Apart from kube.py
so that catching it never loads the Kubernetes client: the commands that make no API call start fast."""

from dynamo_hooks.report import ERROR, Finding, Report

NOT_FOUND, FORBIDDEN, TIMEOUT, UNREACHABLE, API_ERROR = "not-found", "forbidden", "timeout", "unreachable", "api-error"
# resolve_service adds these two
NO_PORT, NO_READY_ENDPOINTS = "no-port", "no-ready-endpoints"


class KubeError(Exception):
    """A Kubernetes API call failed, or its answer does not give what was asked for.

    `peer` names what was asked about (NAMESPACE/NAME), `reason` is a short stable code (not-found,
    forbidden, timeout, unreachable, api-error, no-port, no-ready-endpoints) and `message` one line
    naming the resource, its namespace and what is wrong."""

    def __init__(self, peer, reason, message):
        super().__init__(message)
        self.peer = peer
        self.reason = reason
        self.message = message

    def __repr__(self):
        return f"KubeError({self.peer!r}, {self.reason!r}, {self.message!r})"

    def report(self, check):
        """The Report of `check`, stopped by this failure."""
        return Report(check, [Finding(self.peer, ERROR, self.reason, self.message)])
