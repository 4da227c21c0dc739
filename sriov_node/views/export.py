"""`sriov-node export device-plugin`: the device plugin's config (built by `engine/device_plugin.py`) as a
ConfigMap for `kubectl apply`, whole or merged per node into a ConfigMap the cluster keeps."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional

from sriov_node.engine.device_plugin import Export

DEFAULT_CONFIGMAP = "sriovdp-config"
DEFAULT_NAMESPACE = "kube-system"
_DNS_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\Z")


def check_names(configmap: str, namespace: str) -> Optional[str]:
    """Why Kubernetes would refuse this ConfigMap name or namespace, or None."""
    if len(configmap) > 253 or not _DNS_SUBDOMAIN_RE.match(configmap):
        return f"--configmap {configmap!r} is not a ConfigMap name (lower-case letters, digits, '-' and '.')"
    if not _DNS_LABEL_RE.match(namespace):
        return f"--namespace {namespace!r} is not a namespace name (lower-case letters, digits and '-', at most 63)"
    return None


def configmap_yaml(export: Export, *, name: str = DEFAULT_CONFIGMAP, namespace: str = DEFAULT_NAMESPACE,
                   source: str = "") -> str:
    """The config.json as a ConfigMap (key config.json), ready for `kubectl apply -f -`."""
    body = "".join(f"    {line}\n" for line in export.json_text().splitlines())
    source = " ".join(source.split())  # a comment stays on one line
    return (f"# sriov-node export device-plugin{f' from {source}' if source else ''}: the SR-IOV device plugin\n"
            f"# reads it at start; restart its pods after applying a change.\n"
            "apiVersion: v1\n"
            "kind: ConfigMap\n"
            "metadata:\n"
            f"  name: {name}\n"
            f"  namespace: {namespace}\n"
            "data:\n"
            "  config.json: |\n"
            f"{body}")


# ---------------------------------------------------------------------------- one ConfigMap, a key per node

def check_node(node: str) -> Optional[str]:
    """Why `node` cannot be a node name and a ConfigMap key, or None."""
    if len(node) > 253 or not _DNS_SUBDOMAIN_RE.match(node):
        return (f"--node {node!r} is not a node name (lower-case letters, digits, '-' and '.'; as `kubectl get nodes` "
                "shows it)")
    return None


def read_configmap(path: str) -> Dict[str, Any]:
    """The ConfigMap in `path` (YAML, or JSON as `kubectl get configmap NAME -o json` prints it).

    Raises UsageError (exit 2) naming the file and what is wrong with it.
    """
    from sriov_node.errors import UsageError
    from sriov_node.files import read_regular

    try:
        data = read_regular(path, limit=1 << 21)  # a ConfigMap holds at most 1 MiB
    except OSError as exc:
        raise UsageError(f"--merge {path}: cannot read it: {exc.strerror or exc}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--merge {path}: not UTF-8 text")
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            import yaml
        except ImportError:
            raise UsageError(f"--merge {path}: not JSON, and PyYAML (python3-yaml) is not installed to read YAML; "
                             "install it, or give the ConfigMap as JSON (kubectl get configmap NAME -o json)")
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"--merge {path}: not valid YAML: {' '.join(str(exc).split())}")
    if not isinstance(doc, dict) or doc.get("kind") != "ConfigMap" or doc.get("apiVersion") != "v1":
        raise UsageError(f"--merge {path}: not a ConfigMap (apiVersion: v1, kind: ConfigMap); give the file "
                         "`kubectl get configmap NAME -o yaml` prints")
    for section in ("data", "binaryData"):
        values = doc.get(section)
        if values is None:
            continue
        if not isinstance(values, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in values.items()):
            raise UsageError(f"--merge {path}: {section} must map keys to strings")
    if not isinstance(doc.get("metadata") or {}, dict):
        raise UsageError(f"--merge {path}: metadata must be a mapping")
    return doc


def _scalar(value: str, indent: str) -> str:
    """`value` as a YAML scalar: a literal block when that keeps it exactly, else a JSON (double-quoted) string."""
    lines = value[:-1].split("\n") if value.endswith("\n") else []
    if lines and lines[0] and not lines[0][0].isspace() and all(
            line == line.rstrip() and all(c.isprintable() for c in line) for line in lines) and lines[-1]:
        return "|\n" + "".join(f"{indent}{line}\n" if line else "\n" for line in lines)
    return json.dumps(value) + "\n"


def node_configmap_yaml(export: Export, key: str, *, name: Optional[str], namespace: Optional[str],
                        merge: Optional[Dict[str, Any]] = None, source: str = "") -> str:
    """A ConfigMap whose key `key` (the node's name) holds this node's config.json, the other keys of `merge`
    (an existing ConfigMap: other nodes' configs, its labels and annotations) kept as they are. The plugin reads
    its node's key with `--config-file=/etc/pcidp/$(NODE_NAME)`.

    Raises UsageError when --configmap/--namespace contradict the merged ConfigMap's own.
    """
    from sriov_node.errors import UsageError

    meta = dict((merge or {}).get("metadata") or {})
    for option, given, field_ in (("--configmap", name, "name"), ("--namespace", namespace, "namespace")):
        have = meta.get(field_)
        if given is not None and have is not None and given != have:
            raise UsageError(f"{option} {given!r}, but the ConfigMap to merge into has {field_} {have!r}; "
                             f"drop {option} or merge into that ConfigMap")
    name = meta.get("name") or name or DEFAULT_CONFIGMAP
    namespace = meta.get("namespace") or namespace or DEFAULT_NAMESPACE
    why = check_names(str(name), str(namespace))
    if why:
        raise UsageError(f"the ConfigMap to merge into: {why}")
    data: Dict[str, str] = dict((merge or {}).get("data") or {})
    kept = [k for k in data if k != key]
    data[key] = export.json_text()
    source = " ".join(source.split())
    out = [f"# sriov-node export device-plugin --node {key}{f' from {source}' if source else ''}: key {key} is\n",
           "# this node's config.json (the plugin reads /etc/pcidp/$(NODE_NAME)); "
           + (f"{len(kept)} other key(s) kept.\n" if merge is not None else "no other key.\n"),
           "apiVersion: v1\n", "kind: ConfigMap\n", "metadata:\n", f"  name: {name}\n", f"  namespace: {namespace}\n"]
    for field_ in ("labels", "annotations"):
        values = meta.get(field_)
        if isinstance(values, dict) and values:
            out.append(f"  {field_}:\n")
            out += [f"    {json.dumps(str(k))}: {json.dumps(str(v))}\n" for k, v in values.items()]
    out.append("data:\n")
    for k in data:  # the merged keys in their order, this node's in its place (a new one last)
        out.append(f"  {json.dumps(k)}: {_scalar(data[k], '    ')}")
    binary = (merge or {}).get("binaryData") or {}
    if binary:
        out.append("binaryData:\n")
        out += [f"  {json.dumps(k)}: {json.dumps(v)}\n" for k, v in binary.items()]
    return "".join(out)
