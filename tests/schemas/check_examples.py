#!/usr/bin/env python3
"""Validates examples/istio/ and examples/envoy-gateway/ against their schemas.

Run by the end-to-end suite (tests/tests/e2e/k8s_examples.rs) with the test
venv, offline:

    .venv/bin/python tests/schemas/check_examples.py istio PATH/TO/floodgate
    .venv/bin/python tests/schemas/check_examples.py envoy-gateway PATH/TO/floodgate
    .venv/bin/python tests/schemas/check_examples.py selftest

- Core kinds (ConfigMap): kubernetes-validate --strict, several Kubernetes versions.
- Custom resources (Istio's EnvoyFilter, Envoy Gateway's BackendTrafficPolicy):
  jsonschema against the CRD's openAPIV3Schema, vendored in this directory,
  made strict the way `kubectl apply` (server-side field validation Strict)
  is: an unknown field is an error wherever the schema lists properties and
  does not preserve unknown fields. CEL rules (x-kubernetes-validations) are
  not evaluated: they need a Kubernetes API server.
- Envoy Gateway's EnvoyGateway configuration has no CRD (it is a file in a
  ConfigMap): a structural check against the Go types it decodes into, vendored
  here: every key must be a json tag of the struct at that place, scalars must
  have the Go type's kind, and `+kubebuilder:validation:Enum` lists are
  enforced (also on map keys). Types from other packages (Kubernetes core,
  Gateway API) are opaque to this check, and are listed in its output.
- Our chart's values (examples/istio/values.yaml): values.schema.json, a
  render, kubernetes-validate --strict of the rendered manifests, and the
  wiring between the rendered Service / Deployment and the EnvoyFilters and
  the rules ConfigMap.
- The rules: `floodgate check` on the ConfigMap's files and on the
  RateLimitConfig Envoy Gateway pushes (wire/ratelimitconfig.yaml).

Exits 1 on the first failed check, naming it.
"""

import copy
import pathlib
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ISTIO = ROOT / "examples" / "istio"
EG = ROOT / "examples" / "envoy-gateway"
CHART = ROOT / "helm" / "floodgate"
VENV_BIN = pathlib.Path(sys.executable).parent
KUBE_VERSIONS = ["1.25.0", "1.33.0", "1.37.0"]
ENVOYFILTER_CRD = HERE / "istio-envoyfilter-crd.yaml"
BTP_CRD = HERE / "envoy-gateway-backendtrafficpolicy-crd.yaml"
EG_GO_TYPES = [HERE / "envoy-gateway-envoygateway_types.go", HERE / "envoy-gateway-shared_types.go"]
RLS_FILTER = "envoy.filters.http.ratelimit"


class Invalid(Exception):
    """A document does not match its schema."""


def fail(what):
    print(f"example check FAILED: {what}", file=sys.stderr)
    sys.exit(1)


def load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def load_one(path):
    docs = load_all(path)
    if len(docs) != 1:
        fail(f"{path}: expected one document, found {len(docs)}")
    return docs[0]


def rel(path):
    return path.relative_to(ROOT)


# --- Core kinds: kubernetes-validate -----------------------------------------

def kubernetes_validate(path):
    for kube in KUBE_VERSIONS:
        done = subprocess.run(
            [str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", kube, str(path)],
            capture_output=True, text=True)
        if done.returncode != 0:
            raise Invalid(f"kubernetes-validate (k8s {kube}): {done.stdout}{done.stderr}".strip())


# --- Custom resources: the CRD's openAPIV3Schema ------------------------------

def strict(schema):
    """The CRD schema as a JSON schema that refuses unknown fields, as the
    API server's strict field validation does, and accepts null where the
    schema says `nullable`."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


class Crd:
    def __init__(self, path):
        crd = load_one(path)
        self.path = path
        self.group = crd["spec"]["group"]
        self.kind = crd["spec"]["names"]["kind"]
        self.versions = {}
        for v in crd["spec"]["versions"]:
            if v.get("served"):
                schema = strict(v["schema"]["openAPIV3Schema"])
                # The API server checks these itself; some CRDs (Istio's) leave
                # them out of the schema.
                props = schema.setdefault("properties", {})
                props.setdefault("apiVersion", {"type": "string"})
                props.setdefault("kind", {"type": "string"})
                props.setdefault("metadata", {"type": "object"})
                schema.setdefault("required", [])
                schema["required"] = sorted(set(schema["required"]) | {"apiVersion", "kind", "metadata"})
                self.versions[f"{self.group}/{v['name']}"] = jsonschema.Draft4Validator(schema)

    def validate(self, doc, where):
        if doc.get("kind") != self.kind:
            raise Invalid(f"{where}: kind {doc.get('kind')!r}, the CRD serves {self.kind}")
        validator = self.versions.get(doc.get("apiVersion"))
        if validator is None:
            raise Invalid(f"{where}: apiVersion {doc.get('apiVersion')!r}, the CRD serves {sorted(self.versions)}")
        if not (doc.get("metadata") or {}).get("name"):
            raise Invalid(f"{where}: no metadata.name")
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            raise Invalid(f"{where}: " + "; ".join(
                f"at {'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors))


# --- EnvoyGateway: the Go types' json tags ------------------------------------

class GoTypes:
    """The structs, scalar types and enums of Go source files, enough to
    check a YAML document against the type it decodes into."""

    FIELD = re.compile(r'^\s*(?:(\w+)\s+)?([\w.\*\[\]]+)\s+`json:"([^"]*)"')

    def __init__(self, paths):
        self.structs, self.scalars, self.enums = {}, {}, {}
        for path in paths:
            self._parse(path.read_text())

    def _parse(self, text):
        lines = text.splitlines()
        markers = []
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("//"):
                markers.append(line)
            m = re.match(r"^type (\w+) struct \{", line)
            s = re.match(r"^type (\w+) (string|bool|u?int\d*|float\d*)\s*$", line)
            if m:
                fields, field_markers = {}, []
                i += 1
                while not lines[i].startswith("}"):
                    body = lines[i]
                    if body.strip().startswith("//"):
                        field_markers.append(body)
                    f = self.FIELD.match(body)
                    if f:
                        name, typ, tag = f.group(1), f.group(2), f.group(3)
                        key = tag.split(",")[0]
                        enum = self._enum(field_markers)
                        if name is None or (key == "" and "inline" in tag):
                            fields.setdefault("", []).append(typ)  # inline (embedded)
                        elif key != "-":
                            fields[key] = (typ, enum)
                        field_markers = []
                    elif not body.strip().startswith("//"):
                        field_markers = []
                    i += 1
                self.structs[m.group(1)] = fields
                markers = []
            elif s:
                self.scalars[s.group(1)] = s.group(2)
                enum = self._enum(markers)
                if enum:
                    self.enums[s.group(1)] = enum
                markers = []
            elif not line.startswith("//"):
                markers = []
            i += 1

    @staticmethod
    def _enum(markers):
        for marker in markers:
            m = re.search(r"\+kubebuilder:validation:Enum=(\S+)", marker)
            if m:
                return m.group(1).split(";")
        return None

    def fields(self, struct):
        out = {}
        for key, value in self.structs[struct].items():
            if key == "":
                for embedded in value:
                    name = embedded.lstrip("*")
                    if name == "metav1.TypeMeta":
                        out["apiVersion"] = ("string", None)
                        out["kind"] = ("string", None)
                    elif name in self.structs:
                        out.update(self.fields(name))
                    else:
                        raise Invalid(f"struct {struct} embeds {embedded}, which these files do not define")
            else:
                out[key] = value
        return out

    def check(self, value, typ, path, opaque, enum=None):
        typ = typ.lstrip("*")
        if typ.startswith("[]"):
            if not isinstance(value, list):
                raise Invalid(f"{path}: expected a list ({typ}), got {value!r}")
            for n, item in enumerate(value):
                self.check(item, typ[2:], f"{path}[{n}]", opaque)
            return
        m = re.match(r"^map\[([\w.]+)\](.+)$", typ)
        if m:
            if not isinstance(value, dict):
                raise Invalid(f"{path}: expected a map ({typ}), got {value!r}")
            for k, v in value.items():
                self.check(k, m.group(1), f"{path} key", opaque)
                self.check(v, m.group(2), f"{path}.{k}", opaque)
            return
        if "." in typ:  # another package's type: not checked here
            opaque.add(f"{path} ({typ})")
            return
        if typ in self.structs:
            if not isinstance(value, dict):
                raise Invalid(f"{path}: expected an object ({typ}), got {value!r}")
            fields = self.fields(typ)
            for key, v in value.items():
                if key not in fields:
                    raise Invalid(f"{path}: {typ} has no field {key!r} (fields: {', '.join(sorted(fields))})")
                ftyp, fenum = fields[key]
                self.check(v, ftyp, f"{path}.{key}" if path else key, opaque, fenum)
            return
        base = self.scalars.get(typ, typ)
        kinds = {"string": str, "bool": bool}
        want = kinds.get(base, int if re.match(r"u?int", base) else float if base.startswith("float") else None)
        if want is None:
            raise Invalid(f"{path}: type {typ} is not defined in the vendored Go files")
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise Invalid(f"{path}: expected {typ} ({base}), got {value!r}")
        allowed = enum or self.enums.get(typ)
        if allowed and value not in allowed:
            raise Invalid(f"{path}: {value!r} is not one of {typ}'s values {allowed}")


def check_envoy_gateway_config(config, types):
    """Returns the fields left to other packages' types."""
    if config.get("apiVersion") != "gateway.envoyproxy.io/v1alpha1" or config.get("kind") != "EnvoyGateway":
        raise Invalid(f"apiVersion/kind {config.get('apiVersion')}/{config.get('kind')}, "
                      "expected gateway.envoyproxy.io/v1alpha1/EnvoyGateway")
    opaque = set()
    types.check(config, "EnvoyGateway", "", opaque)
    return sorted(opaque)


# --- The rules ----------------------------------------------------------------

def floodgate_check(floodgate, files, what):
    with tempfile.TemporaryDirectory() as d:
        for name, text in files.items():
            (pathlib.Path(d) / name).write_text(text)
        done = subprocess.run([floodgate, "check", d], capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"floodgate check refuses {what}:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def rules_by_domain(config_map):
    out = {}
    for file, text in (config_map.get("data") or {}).items():
        rules = yaml.safe_load(text)
        out[rules["domain"]] = (file, rules)
    return out


# --- Istio --------------------------------------------------------------------

def patches(envoy_filter, apply_to):
    return [p for p in envoy_filter["spec"]["configPatches"] if p["applyTo"] == apply_to]


def rls_filter(envoy_filter, where):
    found = [p["patch"]["value"] for p in patches(envoy_filter, "HTTP_FILTER")
             if p["patch"]["value"].get("name") == RLS_FILTER]
    if len(found) != 1:
        fail(f"{where}: expected one HTTP_FILTER patch adding {RLS_FILTER}, found {len(found)}")
    return found[0]["typed_config"]


def render_values(values, release, namespace):
    import helm_python as helm
    chart = helm.Chart.load(str(CHART))
    try:
        chart.validate_schema(values)
    except helm.HelmValuesError as e:
        fail(f"{rel(ISTIO / 'values.yaml')}: the chart's values.schema.json refuses it: {e}")
    try:
        rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    except helm.HelmError as e:
        fail(f"{rel(ISTIO / 'values.yaml')}: the chart does not render: {e}")
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def check_istio(floodgate):
    crd = Crd(ENVOYFILTER_CRD)
    filters = {}
    for name in ("envoyfilter-gateway.yaml", "envoyfilter-sidecar.yaml"):
        path = ISTIO / name
        doc = load_one(path)
        try:
            crd.validate(doc, str(rel(path)))
        except Invalid as e:
            fail(str(e))
        filters[name] = doc
        print(f"{rel(path)}: EnvoyFilter {doc['metadata']['namespace']}/{doc['metadata']['name']} "
              f"matches the EnvoyFilter CRD ({doc['apiVersion']}, strict)")
    contexts = {n: {p["match"]["context"] for p in f["spec"]["configPatches"]} for n, f in filters.items()}
    if contexts["envoyfilter-gateway.yaml"] != {"GATEWAY"}:
        fail(f"envoyfilter-gateway.yaml: patch contexts {contexts['envoyfilter-gateway.yaml']}, expected GATEWAY")
    if contexts["envoyfilter-sidecar.yaml"] != {"SIDECAR_INBOUND", "SIDECAR_OUTBOUND"}:
        fail(f"envoyfilter-sidecar.yaml: patch contexts {contexts['envoyfilter-sidecar.yaml']}")
    if not filters["envoyfilter-sidecar.yaml"]["spec"].get("workloadSelector", {}).get("labels"):
        fail("envoyfilter-sidecar.yaml: no workloadSelector")

    cm_path = ISTIO / "rules-configmap.yaml"
    config_map = load_one(cm_path)
    try:
        kubernetes_validate(cm_path)
    except Invalid as e:
        fail(f"{rel(cm_path)}: {e}")
    print(f"{rel(cm_path)}: kubernetes-validate --strict (k8s {', '.join(KUBE_VERSIONS)}): ok")
    print(f"{rel(cm_path)}: " + floodgate_check(floodgate, config_map["data"], "the ConfigMap's rules"))
    domains = rules_by_domain(config_map)

    # Our chart with values.yaml, released as the EnvoyFilters expect.
    values = yaml.safe_load((ISTIO / "values.yaml").read_text())
    namespace = config_map["metadata"]["namespace"]
    docs = render_values(values, "floodgate", namespace)
    with tempfile.TemporaryDirectory() as d:
        manifest = pathlib.Path(d) / "rendered.yaml"
        manifest.write_text(yaml.safe_dump_all(docs))
        try:
            kubernetes_validate(manifest)
        except Invalid as e:
            fail(f"the chart rendered with {rel(ISTIO / 'values.yaml')}: {e}")
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    print(f"{rel(ISTIO / 'values.yaml')}: values.schema.json ok; renders {', '.join(sorted(kinds))}; "
          f"kubernetes-validate --strict: ok")
    if "ConfigMap" in kinds:
        fail("values.yaml: the chart renders its own rules ConfigMap, not rules-configmap.yaml's")
    deployment = kinds["Deployment"][0]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounted = volumes.get("rules", {}).get("configMap", {}).get("name")
    if mounted != config_map["metadata"]["name"] or deployment["metadata"]["namespace"] != namespace:
        fail(f"the Deployment mounts ConfigMap {mounted!r} in {deployment['metadata']['namespace']}, "
             f"rules-configmap.yaml is {namespace}/{config_map['metadata']['name']}")
    service = kinds["Service"][0]
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    fqdn = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    cluster = f"outbound|{grpc['port']}||{fqdn}"
    if grpc.get("appProtocol") not in ("kubernetes.io/h2c", "grpc", "http2"):
        fail(f"the Service's gRPC port does not declare HTTP/2: {grpc}")
    print(f"the chart's Service: {fqdn} gRPC {grpc['port']} ({grpc['appProtocol']}); "
          f"the Deployment mounts ConfigMap {namespace}/{mounted}")

    for name, doc in filters.items():
        config = rls_filter(doc, name)
        envoy_grpc = config["rate_limit_service"]["grpc_service"]["envoy_grpc"]
        if envoy_grpc["cluster_name"] != cluster or envoy_grpc.get("authority") != fqdn:
            fail(f"{name}: the filter asks cluster {envoy_grpc['cluster_name']!r} "
                 f"(authority {envoy_grpc.get('authority')!r}); the chart's Service is {cluster!r}")
        for p in patches(doc, "CLUSTER"):
            match = p["match"]["cluster"]
            if match.get("service") != fqdn or match.get("portNumber") != grpc["port"]:
                fail(f"{name}: the CLUSTER patch matches {match}, the Service is {fqdn}:{grpc['port']}")
        domain = config["domain"]
        if domain not in domains:
            fail(f"{name}: domain {domain!r} has no rules in rules-configmap.yaml (domains: {sorted(domains)})")
        file, rules = domains[domain]
        keys = {d["key"] for d in rules["descriptors"]}
        for p in patches(doc, "VIRTUAL_HOST"):
            for limit in p["patch"]["value"]["rate_limits"]:
                for action in limit["actions"]:
                    key = action["request_headers"]["descriptor_key"]
                    if key not in keys:
                        fail(f"{name}: descriptor {key!r} has no rule in {file} (keys: {sorted(keys)})")
        print(f"{name}: asks {cluster} for domain {domain}, whose rules are {file}; "
              f"every descriptor key it sends has a rule")
    print("istio examples: ok")


# --- Envoy Gateway ------------------------------------------------------------

def check_envoy_gateway(floodgate):
    path = EG / "envoy-gateway.yaml"
    try:
        kubernetes_validate(path)
    except Invalid as e:
        fail(f"{rel(path)}: {e}")
    config_map = load_one(path)
    meta = config_map["metadata"]
    if (meta["name"], meta["namespace"]) != ("envoy-gateway-config", "envoy-gateway-system"):
        fail(f"{rel(path)}: Envoy Gateway reads the ConfigMap envoy-gateway-system/envoy-gateway-config, not {meta}")
    if list(config_map["data"]) != ["envoy-gateway.yaml"]:
        fail(f"{rel(path)}: Envoy Gateway reads the key envoy-gateway.yaml, the ConfigMap has {list(config_map['data'])}")
    print(f"{rel(path)}: kubernetes-validate --strict (k8s {', '.join(KUBE_VERSIONS)}): ok")
    config = yaml.safe_load(config_map["data"]["envoy-gateway.yaml"])
    types = GoTypes(EG_GO_TYPES)
    try:
        opaque = check_envoy_gateway_config(config, types)
    except Invalid as e:
        fail(f"{rel(path)}: EnvoyGateway: {e}")
    print(f"{rel(path)}: EnvoyGateway matches the Go types' json tags and enums "
          f"(not checked, other packages' types: {', '.join(opaque) or 'none'})")
    image = config["provider"]["kubernetes"]["rateLimitDeployment"]["container"]["image"]
    if "envoyproxy/ratelimit" in image or "floodgate" not in image:
        fail(f"{rel(path)}: the rate-limit image is {image!r}, not Floodgate's")
    if config["rateLimit"]["backend"]["type"] != "Redis":
        fail(f"{rel(path)}: rateLimit.backend.type is not Redis")
    print(f"{rel(path)}: the rate-limit Deployment runs {image}")

    policy_path = EG / "backendtrafficpolicy.yaml"
    policy = load_one(policy_path)
    try:
        Crd(BTP_CRD).validate(policy, str(rel(policy_path)))
    except Invalid as e:
        fail(str(e))
    print(f"{rel(policy_path)}: BackendTrafficPolicy matches the BackendTrafficPolicy CRD ({policy['apiVersion']}, strict)")

    # The wire files say what this policy becomes (README: "On the wire").
    wire = EG / "wire"
    rlc = load_one(wire / "ratelimitconfig.yaml")
    http_filter = load_one(wire / "http-filter.yaml")
    route = load_one(wire / "route.yaml")
    (target,) = policy["spec"]["targetRefs"]
    (rule,) = policy["spec"]["rateLimit"]["global"]["rules"]
    (selector,) = rule["clientSelectors"]
    (header,) = selector["headers"]
    route_name = route["name"]
    if not route_name.startswith(f"httproute/{policy['metadata']['namespace']}/{target['name']}/rule/0/match/0/"):
        fail(f"wire/route.yaml: route {route_name!r} is not the policy's HTTPRoute {target['name']}")
    per_route = route["typed_per_filter_config"][RLS_FILTER]
    (actions,) = [r["actions"] for r in per_route["rate_limits"]]
    domain = rlc["domain"]
    if not (rlc["name"] == domain == http_filter["typed_config"]["domain"] == per_route["domain"]):
        fail("wire/: the RateLimitConfig, the filter and the route disagree on the domain")
    (top,) = rlc["descriptors"]
    (inner,) = top["descriptors"]
    generic = actions[0]["generic_key"]
    if not (top["key"] == top["value"] == generic["descriptor_key"] == generic["descriptor_value"] == route_name):
        fail(f"wire/: the route descriptor differs between the RateLimitConfig {top} and the route's actions {generic}")
    headers = actions[1]["request_headers"]
    if (headers["header_name"], headers["descriptor_key"]) != (header["name"], inner["key"]) or "value" in inner:
        fail(f"wire/: the header descriptor {headers} does not match the policy's {header} and the config's {inner}")
    want = {"unit": rule["limit"]["unit"].upper(), "requests_per_unit": rule["limit"]["requests"]}
    if inner["rate_limit"] != want:
        fail(f"wire/ratelimitconfig.yaml: limit {inner['rate_limit']}, the policy says {want}")
    print(f"wire/: domain {domain}, route descriptor {route_name}, {inner['key']} "
          f"{want['requests_per_unit']} per {want['unit'].lower()}, consistent with the policy")
    rules = {k: v for k, v in rlc.items() if k != "name"}
    print("wire/ratelimitconfig.yaml as rules: "
          + floodgate_check(floodgate, {"ratelimitconfig.yaml": yaml.safe_dump(rules)}, "wire/ratelimitconfig.yaml"))
    print("envoy-gateway examples: ok")


# --- Self test: the checks refuse wrong documents -----------------------------

def selftest():
    """Each validator refuses a broken copy of a real example."""
    envoy_filter = load_one(ISTIO / "envoyfilter-gateway.yaml")
    policy = load_one(EG / "backendtrafficpolicy.yaml")
    eg_config = yaml.safe_load(load_one(EG / "envoy-gateway.yaml")["data"]["envoy-gateway.yaml"])
    filter_crd, policy_crd, types = Crd(ENVOYFILTER_CRD), Crd(BTP_CRD), GoTypes(EG_GO_TYPES)

    def broken(doc, change):
        doc = copy.deepcopy(doc)
        change(doc)
        return doc

    def key(doc, path, old, new):
        node = doc
        for p in path:
            node = node[p]
        node[new] = node.pop(old)

    def setv(doc, path, value):
        node = doc
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    cases = [
        ("EnvoyFilter: a misspelled spec field", filter_crd,
         broken(envoy_filter, lambda d: key(d, ["spec"], "configPatches", "configPatch"))),
        ("EnvoyFilter: a context that does not exist", filter_crd,
         broken(envoy_filter, lambda d: setv(d, ["spec", "configPatches", 0, "match", "context"], "GATEWAYS"))),
        ("EnvoyFilter: an operation that does not exist", filter_crd,
         broken(envoy_filter, lambda d: setv(d, ["spec", "configPatches", 0, "patch", "operation"], "INSERT"))),
        ("EnvoyFilter: an apiVersion the CRD does not serve", filter_crd,
         broken(envoy_filter, lambda d: setv(d, ["apiVersion"], "networking.istio.io/v9"))),
        ("BackendTrafficPolicy: a unit that does not exist", policy_crd,
         broken(policy, lambda d: setv(d, ["spec", "rateLimit", "global", "rules", 0, "limit", "unit"], "Minutes"))),
        ("BackendTrafficPolicy: a misspelled limit field", policy_crd,
         broken(policy, lambda d: key(d, ["spec", "rateLimit", "global", "rules", 0, "limit"], "requests", "request"))),
        ("BackendTrafficPolicy: requests as a string", policy_crd,
         broken(policy, lambda d: setv(d, ["spec", "rateLimit", "global", "rules", 0, "limit", "requests"], "3"))),
        ("EnvoyGateway: a misspelled Redis field", types,
         broken(eg_config, lambda d: key(d, ["rateLimit", "backend", "redis"], "url", "uri"))),
        ("EnvoyGateway: the image one level too high", types,
         broken(eg_config, lambda d: setv(d, ["provider", "kubernetes", "rateLimitDeployment", "image"], "x"))),
        ("EnvoyGateway: a backend type that does not exist", types,
         broken(eg_config, lambda d: setv(d, ["rateLimit", "backend", "type"], "Memcache"))),
        ("EnvoyGateway: a log component that does not exist", types,
         broken(eg_config, lambda d: setv(d, ["logging", "level"], {"ratelimiter": "info"}))),
        ("EnvoyGateway: failClosed as a string", types,
         broken(eg_config, lambda d: setv(d, ["rateLimit", "failClosed"], "no"))),
    ]
    # The unbroken documents pass, so each refusal below is the change's.
    filter_crd.validate(envoy_filter, "envoyfilter-gateway.yaml")
    policy_crd.validate(policy, "backendtrafficpolicy.yaml")
    check_envoy_gateway_config(eg_config, types)
    for what, validator, doc in cases:
        try:
            if isinstance(validator, GoTypes):
                check_envoy_gateway_config(doc, validator)
            else:
                validator.validate(doc, validator.kind)
        except Invalid as e:
            print(f"refused: {what}: {e}")
        else:
            fail(f"accepted {what}")
    with tempfile.TemporaryDirectory() as d:
        cm = load_one(ISTIO / "rules-configmap.yaml")
        cm["data"]["orders.yaml"] = 5
        path = pathlib.Path(d) / "cm.yaml"
        path.write_text(yaml.safe_dump(cm))
        try:
            kubernetes_validate(path)
        except Invalid as e:
            print(f"refused: ConfigMap: a data value that is not a string: {str(e).splitlines()[0]}")
        else:
            fail("kubernetes-validate accepted a ConfigMap with a number in data")
    print(f"selftest: {len(cases) + 1} broken documents refused")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "selftest":
        selftest()
    elif what in ("istio", "envoy-gateway") and len(sys.argv) == 3:
        (check_istio if what == "istio" else check_envoy_gateway)(sys.argv[2])
    else:
        fail("usage: check_examples.py istio|envoy-gateway FLOODGATE_BINARY, or check_examples.py selftest")


if __name__ == "__main__":
    main()
