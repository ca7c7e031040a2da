"""The frontend's PodDisruptionBudget: a drain never takes every frontend pod at once."""

from tests.helm import environment_values, find, one, render

STANDALONE = environment_values("standalone")


def test_the_budget_selects_exactly_the_frontend_pods(helm_major):
    objects = render(STANDALONE, {"frontend": {"replicas": 3}}, major=helm_major)
    pdb = one(objects, "PodDisruptionBudget", "frontend")
    deployment = one(objects, "Deployment", "frontend")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    others = [o for o in objects if o["kind"] in ("StatefulSet", "Job") and o["spec"]["template"]["metadata"]
              .get("labels", {}).items() >= pdb["spec"]["selector"]["matchLabels"].items()]
    assert others == []


def test_the_budget_can_be_left_out():
    assert not find(render(STANDALONE, {"frontend": {"pdb": {"create": False}}}), "PodDisruptionBudget")
