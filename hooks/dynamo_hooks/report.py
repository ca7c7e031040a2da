"""What a command found: one Finding per peer (or mount, or node), gathered in a Report; every dynamo-hooks
command ends in Reports, which the CLI prints one way and turns into an exit code."""

import dataclasses
import json

OK, WARNING, ERROR = "ok", "warning", "error"


@dataclasses.dataclass
class Finding:
    """The outcome for one peer. `reason` is a short stable code (refused, timeout, not-3fs, ...)."""

    peer: str
    status: str
    reason: str
    message: str
    details: dict = dataclasses.field(default_factory=dict)

    def line(self, check):
        return f"{check} {self.peer}: {self.message}" if self.peer else f"{check}: {self.message}"


@dataclasses.dataclass
class Report:
    """The findings of one check. It passes when `need` of them are ok (etcd: at least one endpoint)."""

    check: str
    findings: list
    need: str = "all"  # "all" or "any"
    tally: str = ""  # what a passing summary says instead of the peers' names (counts, for many findings)

    @property
    def ok(self):
        statuses = [f.status != ERROR for f in self.findings]
        if not statuses:
            return False
        return any(statuses) if self.need == "any" else all(statuses)

    def errors(self):
        return [f for f in self.findings if f.status == ERROR]

    def warnings(self):
        return [f for f in self.findings if f.status == WARNING]

    def summary(self):
        """One line: the first error when the check fails, else which peers answered."""
        if not self.findings:
            return f"{self.check}: no peer to check"
        if not self.ok:
            return self.errors()[0].line(self.check)
        good = [f.peer for f in self.findings if f.status != ERROR]
        return f"{self.check}: ok ({self.tally or ', '.join(good)})"

    def as_dict(self):
        return {"check": self.check, "ok": self.ok,
                "findings": [dataclasses.asdict(f) for f in self.findings]}


def to_json(reports):
    return json.dumps({"ok": all(r.ok for r in reports), "checks": [r.as_dict() for r in reports]}, indent=2)
