"""Load the values model (generator/model.yaml) into sections and parameters."""

import copy
import dataclasses
import pathlib

import yaml

MODEL_FILE = pathlib.Path(__file__).with_name("model.yaml")
IMAGE_PULL_POLICIES = ["Always", "IfNotPresent", "Never"]


@dataclasses.dataclass
class Param:
    path: tuple
    doc: str
    default: object
    type: str | None = None
    schema: dict = dataclasses.field(default_factory=dict)
    k8s: str | dict | None = None  # a Kubernetes object passed through (generator/k8s_schema.py)

    @property
    def name(self):
        return ".".join(self.path)


@dataclasses.dataclass
class Section:
    path: tuple
    doc: str
    children: list  # of Param and Section, in model order

    @property
    def name(self):
        return ".".join(self.path)

    def params(self):
        """Every parameter below this section, depth first, in model order."""
        for child in self.children:
            if isinstance(child, Param):
                yield child
            else:
                yield from child.params()

    def defaults(self):
        """The nested dict of defaults, as chart/values.yaml holds them."""
        return {
            child.path[-1]: copy.deepcopy(child.default) if isinstance(child, Param) else child.defaults()
            for child in self.children
        }


def image_section(path, doc, defaults):
    """An image block: the same four parameters wherever the chart runs an image, and a registry first
    when the defaults name one (an image the project publishes, which users host themselves)."""
    registry = [Param(path + ("registry",), "Registry host[:port] prefixed to the repository (\"\" = none).",
                      defaults["registry"], type="registryOrEmpty")] if "registry" in defaults else []
    return Section(path, doc, registry + [
        Param(path + ("repository",), "Image repository.", defaults.get("repository", "")),
        Param(path + ("tag",), "Image tag; ignored when digest is set.", str(defaults.get("tag", ""))),
        Param(path + ("digest",), "Image digest (sha256:...); wins over tag.", "", type="digestOrEmpty"),
        Param(path + ("pullPolicy",), "Image pull policy.", defaults.get("pullPolicy", "IfNotPresent"),
              schema={"enum": IMAGE_PULL_POLICIES}),
    ])


def parse_node(path, node):
    if not isinstance(node, dict):
        raise ValueError(f"{'.'.join(path)}: a model node must be a mapping, got {node!r}")
    doc = " ".join(str(node.get("_doc", "")).split())
    if "_image" in node:
        return image_section(path, doc, node["_image"])
    if "_default" in node:
        return Param(path, doc, node["_default"], node.get("_type"), dict(node.get("_schema", {})), node.get("_k8s"))
    unknown = [k for k in node if k.startswith("_") and k != "_doc"]
    if unknown:
        raise ValueError(f"{'.'.join(path)}: unknown model keys {unknown}")
    children = [parse_node(path + (key,), child) for key, child in node.items() if not key.startswith("_")]
    return Section(path, doc, children)


def load(path=MODEL_FILE):
    """The model's root section."""
    return parse_node((), yaml.safe_load(pathlib.Path(path).read_text()))
