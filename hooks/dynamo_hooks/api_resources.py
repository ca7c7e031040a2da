"""Whether the API server serves a resource the release's pods need, such as a CustomResourceDefinition's
(Dynamo's Kubernetes discovery writes DynamoWorkerMetadata objects): checked by the pre-install hook before
anything is created, through API discovery, which every authenticated client may read."""

import dataclasses

from kubernetes import client

from dynamo_hooks import kube
from dynamo_hooks.report import ERROR, OK, Finding, Report


@dataclasses.dataclass(frozen=True)
class Required:
    """A resource `group/version/plural`, of `kind`, and where it comes from (what the message tells to install)."""

    resource: str
    kind: str
    source: str

    @property
    def group_version(self):
        return self.resource.rsplit("/", 1)[0]

    @property
    def plural(self):
        return self.resource.rsplit("/", 1)[1]


def check(api, required, timeout):
    """A Report per required resource: ok when the API server lists it in its group version."""
    return [_check_one(api, r, timeout) for r in required]


def _check_one(api, required, timeout):
    missing = (f"the API server serves no {required.plural} in {required.group_version}: the {required.kind} "
               f"CustomResourceDefinition is not installed; it comes with {required.source}")
    try:
        with kube.api_errors(peer="api-resources", verb="get", resource=f"/apis/{required.group_version}",
                             namespace="(cluster)", api=api, timeout=timeout):
            group, version = required.group_version.split("/")
            served = client.CustomObjectsApi(api).get_api_resources(group, version, _request_timeout=timeout)
    except kube.KubeError as err:
        if err.reason == kube.NOT_FOUND:
            return Report("api-resources", [Finding(required.resource, ERROR, "missing", missing)])
        return err.report("api-resources")
    if required.plural in {r.name for r in served.resources or []}:
        return Report("api-resources", [Finding(required.resource, OK, "ok", f"{required.kind} is served")])
    return Report("api-resources", [Finding(required.resource, ERROR, "missing", missing)])
