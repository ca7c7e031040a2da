"""The `helm test` Pod: gone after the test whatever its outcome, its log shown by Helm, and its request
bounded well inside Helm's own test timeout."""

import re

from tests.helm import container, environment_values, one, render

HELM_TEST_TIMEOUT_SECONDS = 300  # `helm test --timeout` default (5m) in Helm 3 and 4


def chat_pod():
    return one(render(environment_values("ipoib")), "Pod", "test-chat-completion")


def test_deleted_after_passing_or_failing():
    """Helm deletes no hook object at uninstall: a Pod kept on failure would outlive the release."""
    annotations = chat_pod()["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == \
        {"before-hook-creation", "hook-succeeded", "hook-failed"}
    # Deleted, so its log is printed by Helm before that, in both cases.
    assert set(annotations["helm.sh/hook-output-log-policy"].split(",")) == {"hook-succeeded", "hook-failed"}


def test_request_ends_before_helm_gives_up():
    script = container(chat_pod(), "chat-completion")["args"][0]
    total = int(re.search(r"curl .*-m (\d+) ", script).group(1))
    connect = int(re.search(r"--connect-timeout (\d+) ", script).group(1))
    assert connect < total <= HELM_TEST_TIMEOUT_SECONDS / 2
