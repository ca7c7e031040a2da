"""Build chart/values.schema.json (JSON Schema draft-07, as Helm validates it) from the values model."""

from generator import k8s_schema
from generator.model import Param

IPV4_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4 = rf"{IPV4_OCTET}(\.{IPV4_OCTET}){{3}}"
PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# 3FS parses TYPE case-insensitively; JSON Schema regexes have no inline flags, so spell the cases out.
MGMTD_TYPE = "(" + "|".join("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in t)
                            for t in ("TCP", "RDMA", "IPoIB")) + ")"
DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
QUANTITY = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)([eE][0-9]+|[KMGTPE]i|[mkMGTPE])?$"

DEFINITIONS = {
    "mgmtdAddress": {
        "type": "string",
        "pattern": rf"^{MGMTD_TYPE}://{IPV4}:{PORT}$",
        "description": "TYPE://a.b.c.d:port with a numeric IPv4 address; 3FS rejects hostnames.",
    },
    "fdbClusterFileOrEmpty": {
        "type": "string",
        "pattern": rf"^([A-Za-z0-9_]+:[A-Za-z0-9]+@{IPV4}:{PORT}(,{IPV4}:{PORT})*\s*)?$",
        "description": "description:ID@IP:PORT[,IP:PORT...]",
    },
    "quantity": {"type": ["string", "number"], "pattern": QUANTITY},
    # TRT-LLM's LlmArgs: the keys the chart reads or that the environments set are typed here; TRT-LLM itself
    # refuses an unknown key when the worker starts, as its schema is not available offline.
    "engineConfig": {
        "type": "object",
        "properties": {
            "tensor_parallel_size": {"type": "integer", "minimum": 1},
            "pipeline_parallel_size": {"type": "integer", "minimum": 1},
            "context_parallel_size": {"type": "integer", "minimum": 1},
            "backend": {"type": ["string", "null"]},
            "max_num_tokens": {"type": ["integer", "null"], "minimum": 1},
            "max_batch_size": {"type": ["integer", "null"], "minimum": 1},
            "max_seq_len": {"type": ["integer", "null"], "minimum": 1},
            "enable_chunked_prefill": {"type": "boolean"},
            "kv_cache_config": {
                "type": "object",
                "properties": {
                    "free_gpu_memory_fraction": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                    "max_tokens": {"type": ["integer", "null"], "minimum": 1},
                    "enable_block_reuse": {"type": "boolean"},
                    "enable_partial_reuse": {"type": "boolean"},
                    # TensorRT-LLM: a power of two greater than 1 (docs/source/features/kvcache.md); 32 by default.
                    "tokens_per_block": {"type": "integer", "enum": [2 ** n for n in range(1, 11)]},
                },
            },
        },
    },
}

NAMED_TYPES = {
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "quantity": {"$ref": "#/definitions/quantity"},
    "k8sNameOrEmpty": {"type": "string", "maxLength": 253, "pattern": rf"^({DNS1123_SUBDOMAIN})?$"},
    # No shell metacharacter, space or glob: paths reach the shell scripts of privileged containers.
    "absolutePath": {"type": "string", "pattern": r"^/[A-Za-z0-9._+@:=,/-]*$"},
    "digestOrEmpty": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
    "registryOrEmpty": {"type": "string", "pattern": r"^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?)?$"},
    "duration": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"},
    "stringMap": {"type": "object", "additionalProperties": {"type": "string"}},
    "engineConfig": {"$ref": "#/definitions/engineConfig"},
    # Stricter than Kubernetes' ResourceRequirements, whose quantities are any string: a typo fails here.
    "resources": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "limits": {"type": "object", "additionalProperties": {"$ref": "#/definitions/quantity"}},
            "requests": {"type": "object", "additionalProperties": {"$ref": "#/definitions/quantity"}},
        },
    },
}

# Worker values a group cannot set: they are the release's, since the pre-install Job checks etcd and NATS
# from where every worker stands.
RELEASE_WIDE_WORKER_KEYS = ("groups", "hostNetwork", "dnsPolicy", "dnsConfig")

JSON_TYPES = [(bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"),
              (dict, "object")]


def param_schema(param, definitions, k8s_version):
    if param.k8s:
        schema, needed = k8s_schema.schema(param.k8s, k8s_version)
        definitions.update(needed)
    elif param.type:
        if param.type not in NAMED_TYPES:
            raise ValueError(f"{param.name}: unknown _type {param.type!r}")
        schema = dict(NAMED_TYPES[param.type])
    elif param.default is None:
        schema = {}
    else:
        schema = {"type": next(name for kind, name in JSON_TYPES if isinstance(param.default, kind))}
    schema.update(param.schema)
    if "type" not in schema and "$ref" not in schema:
        raise ValueError(f"{param.name}: a null default needs a _schema type")
    if param.doc:
        schema["description"] = param.doc
    return schema


def section_schema(section, definitions, k8s_version):
    schema = {"type": "object", "additionalProperties": False, "properties": {}}
    if section.doc:
        schema["description"] = section.doc
    for child in section.children:
        name = child.path[-1]
        schema["properties"][name] = (param_schema(child, definitions, k8s_version) if isinstance(child, Param)
                                      else section_schema(child, definitions, k8s_version))
    return schema


def worker_group_schema(properties):
    """A worker group: the worker's own keys and a kvbm block, each as the top-level values type them."""
    worker = properties["worker"]["properties"]
    group = {key: value for key, value in worker.items() if key not in RELEASE_WIDE_WORKER_KEYS}
    group["kvbm"] = properties["kvbm"]
    return {"type": "object", "additionalProperties": False, "properties": group,
            "description": "A worker group's values, merged over worker and kvbm."}


def build(root, title, k8s_version=None):
    k8s_version = k8s_version or k8s_schema.minimum_version()
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "title": title}
    kubernetes = {}
    schema.update(section_schema(root, kubernetes, k8s_version))
    # Helm passes a parent chart's globals to its subcharts.
    schema["properties"]["global"] = {"type": "object", "description": "Values shared with a parent chart."}
    schema["definitions"] = dict(DEFINITIONS, workerGroup=worker_group_schema(schema["properties"]),
                                 **dict(sorted(kubernetes.items())))
    return schema
