#!/usr/bin/env python3
"""Checks the Helm chart without a helm binary or a cluster.

Run by scripts/test (with the .venv it makes):

    .venv/bin/python helm/check.py [path/to/floodgate binary]

1. strict lint (Helm's SDK, through helm-python-sdk);
2. render with the default values and with each ci/*-values.yaml scenario,
   print the kinds each renders;
3. validate every rendered manifest with kubernetes-validate --strict against
   several Kubernetes versions (the Prometheus Operator's ServiceMonitor and
   cert-manager's Certificate are CRDs kubernetes-validate has no schema for:
   their shape is checked here), and check the TLS wiring each scenario's
   values ask for (env, Secret mounts, probes, Service, ServiceMonitor,
   Certificate, the test pod);
4. yamllint the values, Chart.yaml, the scenarios and the rendered output;
5. check that values.schema.json rejects wrong values, and that the templates
   refuse the values that cannot work with a message saying what to do;
6. run `floodgate check` on the rules each scenario renders into its ConfigMap;
7. the Grafana dashboard ConfigMap and the PrometheusRule (on in the
   `monitoring` scenario, off by default): the dashboard's shape and its
   selectors, the rules against the Prometheus Operator's CRD schema
   (tests/schemas/), each alert's runbook heading in README.md, and promtool
   (`check rules`, then the unit tests of helm/alerts-test.yaml).

`--monitoring-json` prints the rendered dashboard and alert expressions as
JSON, for the e2e test that checks their series against a real /metrics.

Exits 1 on the first failed check, naming it.
"""

import pathlib
import subprocess
import sys
import tempfile

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parent
CHART = ROOT / "floodgate"
VENV_BIN = pathlib.Path(sys.executable).parent
KUBE_VERSIONS = ["1.25.0", "1.33.0", "1.37.0"]  # the oldest we claim, a middle one, the newest
RELEASE, NAMESPACE = "floodgate", "infra"


def fail(what):
    print(f"helm check FAILED: {what}", file=sys.stderr)
    sys.exit(1)


def run(cmd, what):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"{what}:\n{done.stdout}{done.stderr}")
    return done.stdout


def scenarios():
    yield "default", {}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        yield path.name.removesuffix("-values.yaml"), yaml.safe_load(path.read_text()) or {}


def documents(rendered):
    """(template path, manifest) for every non-empty document."""
    for path, text in sorted(rendered.items()):
        if not path.endswith(".yaml"):
            continue  # NOTES.txt
        for doc in yaml.safe_load_all(text):
            if doc:
                yield path, doc


def check_service_monitor(doc):
    spec = doc.get("spec", {})
    endpoints = spec.get("endpoints") or []
    if not spec.get("selector", {}).get("matchLabels"):
        fail("ServiceMonitor: no selector.matchLabels")
    if not endpoints or endpoints[0].get("port") != "http" or endpoints[0].get("path") != "/metrics":
        fail(f"ServiceMonitor: endpoints should scrape port http at /metrics: {endpoints}")


LISTENERS = ("grpc", "http", "admin")
TLS_DIR = "/etc/floodgate/tls"
CRDS = ("ServiceMonitor", "Certificate", "PrometheusRule")


def check_tls(name, merged, rendered):
    """The TLS values of a scenario (defaults merged in) against what the
    chart rendered: per listener, the FLOODGATE_<L>_TLS_* settings, its
    Secret mounted as a whole directory (rotation relies on the kubelet's
    `..data` swap, which a subPath mount never sees), probes that work with
    TLS on, and the Service, ServiceMonitor, Certificate, test pod and
    install notes."""
    tls = merged.get("tls") or fail(f"{name}: the chart has no tls values")
    docs = list(documents(rendered))
    notes = rendered.get("floodgate/templates/NOTES.txt", "")
    kinds = {}
    for _, d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    deployment = kinds["Deployment"][0]
    fullname = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    chart_secret = f"{fullname}-tls"

    def secret_mount(path, secret):
        mount = mounts.get(path)
        if not mount:
            fail(f"{name}: no volume mounted at {path}: {sorted(mounts)}")
        if "subPath" in mount or "subPathExpr" in mount:
            fail(f"{name}: {path} is a subPath mount, which never sees Secret updates: {mount}")
        if not mount.get("readOnly"):
            fail(f"{name}: {path} is mounted writable")
        volume = volumes.get(mount["name"], {})
        if volume.get("secret", {}).get("secretName") != secret:
            fail(f"{name}: {path} should mount Secret {secret}: {volume}")

    for listener in LISTENERS:
        t = tls[listener]
        prefix = f"FLOODGATE_{listener.upper()}_TLS_"
        ours = {k: v for k, v in env.items() if k.startswith(prefix)}
        base = f"{TLS_DIR}/{listener}"
        if not t["enabled"]:
            if ours or any(p.startswith(base) for p in mounts):
                fail(f"{name}: {listener} has no TLS, yet renders {ours} {sorted(mounts)}")
            continue
        want = {f"{prefix}CERT_FILE": f"{base}/tls.crt", f"{prefix}KEY_FILE": f"{base}/tls.key"}
        secret_mount(base, t["secretName"] or chart_secret)
        if t["mtls"]:
            ca_dir = base
            if t["clientCaSecretName"]:
                ca_dir = f"{base}-client-ca"
                secret_mount(ca_dir, t["clientCaSecretName"])
            want[f"{prefix}CLIENT_CA_FILE"] = f"{ca_dir}/ca.crt"
            want[f"{prefix}CLIENT_AUTH"] = t["clientAuth"]
            if t["clientNames"]:
                want[f"{prefix}CLIENT_NAMES"] = ",".join(t["clientNames"])
        if ours != want:
            fail(f"{name}: {listener} TLS settings:\n  rendered {ours}\n  expected {want}")

    any_tls = any(tls[listener]["enabled"] for listener in LISTENERS)
    reload = env.get("FLOODGATE_TLS_RELOAD_INTERVAL")
    if reload != (tls["reloadInterval"] if any_tls else None):
        fail(f"{name}: FLOODGATE_TLS_RELOAD_INTERVAL is {reload!r}")

    # Kubelet's gRPC probe speaks no TLS: with TLS on gRPC the probes ask
    # GET /healthcheck on the HTTP port, over HTTPS when HTTP has TLS
    # (kubelet does not verify the certificate, and presents none).
    grpc_tls, http_tls = tls["grpc"]["enabled"], tls["http"]["enabled"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        got = container[probe]
        if grpc_tls:
            want = {"path": "/healthcheck", "port": "http", "scheme": "HTTPS" if http_tls else "HTTP"}
            if got.get("httpGet") != want or "grpc" in got:
                fail(f"{name}: {probe} should be httpGet {want}: {got}")
        elif got.get("grpc", {}).get("port") != 8081 or "httpGet" in got:
            fail(f"{name}: {probe} should be the gRPC probe on 8081: {got}")

    service = kinds["Service"][0]
    protocols = {p["name"]: p.get("appProtocol") for p in service["spec"]["ports"]}
    want = {"grpc": "https" if grpc_tls else "kubernetes.io/h2c", "http": "https" if http_tls else "http"}
    if protocols != want:
        fail(f"{name}: Service appProtocol {protocols}, expected {want}")

    for monitor in kinds.get("ServiceMonitor", []):
        endpoint = monitor["spec"]["endpoints"][0]
        if http_tls:
            want = merged["serviceMonitor"]["tlsConfig"] or {
                "serverName": f"{fullname}.{NAMESPACE}.svc",
                "ca": {"secret": {"name": tls["http"]["secretName"] or chart_secret, "key": "ca.crt"}},
            }
            if endpoint.get("scheme") != "https" or endpoint.get("tlsConfig") != want:
                fail(f"{name}: ServiceMonitor should scrape https with tlsConfig {want}: {endpoint}")
        elif endpoint.get("scheme", "http") != "http" or "tlsConfig" in endpoint:
            fail(f"{name}: ServiceMonitor scrapes with TLS, but HTTP has none: {endpoint}")

    for test in kinds.get("Pod", []):
        script = " ".join(test["spec"]["containers"][0]["command"])
        scheme = "https" if http_tls else "http"
        if f"base={scheme}://" not in script or http_tls != ("--insecure" in script):
            fail(f"{name}: the test pod should ask {scheme}:// (without checking a certificate): {script}")

    admin = tls["admin"]
    flags = {"--tls-ca /etc/floodgate/tls/admin/ca.crt": admin["enabled"],
             "--tls-cert /etc/floodgate/tls/admin/tls.crt": admin["enabled"] and admin["mtls"]}
    for flag, wanted in flags.items():
        if (flag in notes) != wanted:
            fail(f"{name}: the install notes' admin command {'lacks' if wanted else 'has'} {flag}:\n{notes}")

    certificates = kinds.get("Certificate", [])
    c = tls["certificate"]
    if not c["create"]:
        if certificates:
            fail(f"{name}: a Certificate rendered with tls.certificate.create false")
        return
    if len(certificates) != 1:
        fail(f"{name}: expected one Certificate, got {len(certificates)}")
    cert = certificates[0]
    spec = cert["spec"]
    if cert["apiVersion"] != "cert-manager.io/v1" or cert["metadata"]["name"] != chart_secret:
        fail(f"{name}: Certificate {cert['apiVersion']} {cert['metadata']}")
    if spec.get("secretName") != chart_secret or spec.get("issuerRef") != c["issuerRef"]:
        fail(f"{name}: Certificate secretName/issuerRef: {spec}")
    names = c["dnsNames"] or [fullname, f"{fullname}.{NAMESPACE}", f"{fullname}.{NAMESPACE}.svc",
                              f"{fullname}.{NAMESPACE}.svc.cluster.local"]
    if spec.get("dnsNames") != names:
        fail(f"{name}: Certificate dnsNames {spec.get('dnsNames')}, expected {names}")
    if (spec.get("duration"), spec.get("renewBefore")) != (c["duration"], c["renewBefore"]):
        fail(f"{name}: Certificate duration/renewBefore: {spec}")
    client = admin["enabled"] and admin["mtls"] and not admin["secretName"]
    usages = c["usages"] + (["client auth"] if client and "client auth" not in c["usages"] else [])
    if spec.get("usages") != usages:
        fail(f"{name}: Certificate usages {spec.get('usages')}, expected {usages}")


def make_certificates(out):
    """A CA and a server certificate it signed (openssl, which Debian's
    ca-certificates depends on), as the files of a cert-manager Secret."""
    import shutil
    if not shutil.which("openssl"):
        fail("openssl is needed to make test certificates for the TLS scenarios")
    out.mkdir(parents=True, exist_ok=True)

    def openssl(*args):
        run(["openssl", *args], f"openssl {args[0]}")

    ca_key, ca, key, csr, crt = (out / f for f in ("ca.key", "ca.crt", "tls.key", "tls.csr", "tls.crt"))
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(ca_key))
    openssl("req", "-x509", "-new", "-key", str(ca_key), "-subj", "/CN=floodgate test CA", "-days", "2",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-out", str(ca))
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=floodgate", "-out", str(csr))
    ext = out / "ext.cnf"
    ext.write_text("subjectAltName=DNS:floodgate,DNS:localhost,IP:127.0.0.1\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", str(crt))
    return {"tls.crt": crt, "tls.key": key, "ca.crt": ca}


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_with(floodgate, name, deployment, out, maps):
    """Starts `floodgate serve` with the environment the Deployment gives
    its container (secrets as placeholders, Redis at a closed local port,
    loopback listeners) and checks that it accepts every setting: it must
    start serving (Redis unreachable: degraded mode) and stop cleanly."""
    import os
    import signal
    import time
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOODGATE_", "OTEL_"))}
    for e in container["env"]:
        value = e.get("value")
        if value is None:
            value = "placeholder-secret"  # secretKeyRef
        env[e["name"]] = value
    # Files and addresses that exist only in a cluster.
    for tls in ("FLOODGATE_REDIS_TLS_CA_FILE", "FLOODGATE_REDIS_TLS_CERT_FILE", "FLOODGATE_REDIS_TLS_KEY_FILE"):
        env.pop(tls, None)
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    # The listeners' certificates: real files in place of the mounted Secrets.
    tls_files = [var for var, value in env.items() if var.startswith("FLOODGATE_") and value.startswith(f"{TLS_DIR}/")]
    if tls_files:
        made = make_certificates(out / f"{name}-certs")
        for var in tls_files:
            env[var] = str(made[pathlib.PurePosixPath(env[var]).name])
    if "FLOODGATE_REDIS_URL" in env:
        scheme, rest = env["FLOODGATE_REDIS_URL"].split(",")[0].split("://", 1)
        # Keep the credentials part (Kubernetes expands $(VAR) from the env).
        auth = rest.rsplit("@", 1)[0] + "@" if "@" in rest else ""
        for var, value in env.items():
            auth = auth.replace(f"$({var})", value)
        env["FLOODGATE_REDIS_URL"] = f"{scheme}://{auth}127.0.0.1:1"
    rules = out / f"{name}-rules"
    env["FLOODGATE_RULES"] = str(rules if maps else ROOT.parent / "examples" / "rules")
    for var in ("FLOODGATE_GRPC_ADDR", "FLOODGATE_HTTP_ADDR", "FLOODGATE_ADMIN_ADDR"):
        env[var] = f"127.0.0.1:{free_port()}"
    server = subprocess.Popen([floodgate, *container["args"]], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        import socket
        while time.monotonic() < deadline:
            if server.poll() is not None:
                fail(f"{name}: floodgate serve refused the chart's settings:\n{server.stderr.read()}")
            try:
                socket.create_connection(("127.0.0.1", int(env["FLOODGATE_GRPC_ADDR"].rsplit(":", 1)[1])), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            fail(f"{name}: floodgate serve did not listen within 10 s")
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        if code != 0:
            fail(f"{name}: floodgate serve exited {code} on SIGTERM:\n{server.stderr.read()}")
    finally:
        if server.poll() is None:
            server.kill()
    print(f"  floodgate serve accepts the {name} settings")

DASHBOARD_FILE = CHART / "dashboards" / "floodgate.json"
PROMETHEUS_RULE_CRD = ROOT.parent / "tests" / "schemas" / "prometheus-operator-prometheusrules-crd.yaml"
ALERTS_TEST = ROOT / "alerts-test.yaml"
README = ROOT.parent / "README.md"
RUNBOOKS = "### Dashboards and alerts"
# Every series of the dashboard is narrowed to the pods its variables choose.
DASHBOARD_SELECTOR = 'namespace="$namespace",job="$job",pod=~"$pod"'
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def is_dashboard(doc):
    return doc["kind"] == "ConfigMap" and "floodgate.json" in (doc.get("data") or {})


def selectors(expr):
    """The `floodgate_*{...}` selectors of a PromQL expression: (name, matchers text)."""
    import re
    return re.findall(r"(floodgate_[A-Za-z0-9_:]*)\s*(?:\{([^}]*)\})?", expr)


def check_dashboard(name, cm, want):
    """The dashboard ConfigMap: the sidecar's label, the file verbatim, and
    a dashboard whose every query reads `${datasource}` and only the pods
    its namespace/job/pod variables choose."""
    import json
    labels, meta = cm["metadata"].get("labels", {}), cm["metadata"]
    if labels.get(want["label"]) != want["labelValue"]:
        fail(f"{name}: the dashboard ConfigMap lacks the label {want['label']}={want['labelValue']!r}: {labels}")
    if meta["namespace"] != (want["namespace"] or NAMESPACE):
        fail(f"{name}: the dashboard ConfigMap is in {meta['namespace']}")
    if (meta.get("annotations") or {}) != want["annotations"]:
        fail(f"{name}: the dashboard ConfigMap's annotations {meta.get('annotations')}, expected {want['annotations']}")
    text = cm["data"]["floodgate.json"]
    if text != DASHBOARD_FILE.read_text().rstrip("\n"):
        fail(f"{name}: the ConfigMap's dashboard is not dashboards/floodgate.json verbatim")
    dash = json.loads(text)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("datasource", {})
    if (ds.get("type"), ds.get("query")) != ("datasource", "prometheus"):
        fail(f"{name}: the dashboard has no Prometheus `datasource` variable: {ds}")
    for var in ("namespace", "job", "pod"):
        if variables.get(var, {}).get("datasource") != DATASOURCE:
            fail(f"{name}: the dashboard's {var} variable does not query ${{datasource}}")
    ids, queries = set(), 0
    for panel in dash["panels"]:
        if panel["id"] in ids:
            fail(f"{name}: dashboard panel id {panel['id']} twice")
        ids.add(panel["id"])
        grid = panel["gridPos"]
        if grid["x"] + grid["w"] > 24:
            fail(f"{name}: dashboard panel {panel['title']!r} is wider than the grid: {grid}")
        if panel["type"] == "row":
            continue
        if panel.get("datasource") != DATASOURCE or not panel.get("targets"):
            fail(f"{name}: dashboard panel {panel['title']!r} does not query ${{datasource}}")
        for target in panel["targets"]:
            found = selectors(target["expr"])
            if target.get("datasource") != DATASOURCE or not found:
                fail(f"{name}: dashboard panel {panel['title']!r}: {target}")
            for metric, matchers in found:
                if not matchers.startswith(DASHBOARD_SELECTOR):
                    fail(f"{name}: dashboard panel {panel['title']!r} reads {metric} beyond the chosen pods: {target['expr']}")
            queries += 1
    return queries


def runbook_anchors():
    """The GitHub anchors of the headings of README.md's runbooks."""
    import re
    text = README.read_text()
    if RUNBOOKS not in text:
        fail(f"README.md has no {RUNBOOKS!r} section")
    section = text.split(RUNBOOKS, 1)[1].split("\n### ", 1)[0]
    headings = re.findall(r"^#### (\S+)$", section, re.M)
    return {h.lower(): section.split(f"#### {h}\n", 1)[1].split("\n#### ", 1)[0] for h in headings}


def check_prometheus_rule(name, doc, want, fullname):
    """The PrometheusRule: valid against the Prometheus Operator's CRD
    schema, every alert scoped by the selector, with a severity, the extra
    labels, and a runbook_url whose anchor is a README runbook."""
    import json
    import jsonschema
    crd = PROMETHEUS_RULE_CRD.read_text()
    # Go's regexp takes a flag group after `^`; Python's only at the start.
    crd = crd.replace("pattern: ^(?i)", "pattern: (?i)^")
    schema = yaml.safe_load(crd)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    doc = json.loads(json.dumps(doc))  # as the API server gets it
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as e:
        fail(f"{name}: the PrometheusRule does not validate against the CRD schema: {e.message} at {list(e.path)}")
    if doc["apiVersion"] != "monitoring.coreos.com/v1" or doc["metadata"]["namespace"] != NAMESPACE:
        fail(f"{name}: PrometheusRule {doc['apiVersion']} {doc['metadata']}")
    for key, value in want["labels"].items():
        if doc["metadata"]["labels"].get(key) != value:
            fail(f"{name}: the PrometheusRule lacks the label {key}={value!r}")
    selector = want["selector"] or f'job="{fullname}",namespace="{NAMESPACE}"'
    runbooks = runbook_anchors()
    alerts = [rule for group in doc["spec"]["groups"] for rule in group["rules"]]
    names = [rule.get("alert") for rule in alerts]
    if len(set(names)) != len(names) or None in names:
        fail(f"{name}: alerts without a name, or twice: {names}")
    for rule in alerts:
        alert = rule["alert"]
        for metric, matchers in selectors(rule["expr"]):
            if not matchers.startswith(selector):
                fail(f"{name}: {alert} reads {metric} without the selector {selector}: {rule['expr']}")
        labels = rule.get("labels", {})
        if labels.get("severity") not in ("critical", "warning"):
            fail(f"{name}: {alert} has no severity: {labels}")
        for key, value in want["alertLabels"].items():
            if labels.get(key) != value:
                fail(f"{name}: {alert} lacks the label {key}={value!r}: {labels}")
        notes = rule.get("annotations", {})
        if not notes.get("summary") or not notes.get("description"):
            fail(f"{name}: {alert} has no summary or description")
        url = notes.get("runbook_url", "")
        if url != f"{want['runbookUrl']}#{alert.lower()}":
            fail(f"{name}: {alert}'s runbook_url is {url!r}")
        if alert.lower() not in runbooks:
            fail(f"{name}: {alert} has no runbook in README.md's {RUNBOOKS!r} (a '#### {alert}' heading)")
    stale = set(runbooks) - {n.lower() for n in names}
    if stale:
        fail(f"README.md has runbooks for alerts the chart does not have: {sorted(stale)}")
    return names


def check_runbook_text():
    """What README.md's "Dashboards and alerts" states: each default it
    names (`prometheusRule.x` (default `v`)) is the chart's, and each
    quoted name is a dashboard panel or a README heading."""
    import json
    import re
    text = README.read_text()
    section = text.split(RUNBOOKS, 1)[1].split("\n### ", 1)[0]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    stated = re.findall(r"`(prometheusRule\.[\w.]+)` \(default `([^`]*)`\)", section)
    if len(stated) < 10:
        fail(f"README.md's runbooks state {len(stated)} defaults: {stated}")
    for path, default in stated:
        v = values
        for part in path.split("."):
            v = v[part]
        if str(v) != default:
            fail(f"README.md says {path} defaults to {default}; values.yaml has {v}")
    panels = {p["title"] for p in json.loads(DASHBOARD_FILE.read_text())["panels"]}
    headings = set(re.findall(r"^#+ (.+)$", text, re.M))
    quoted = re.findall(r'"([^"\n]+)"', re.sub(r"`[^`]*`", "", section))
    unknown = [q for q in quoted if q not in panels | headings]
    if unknown:
        fail(f"README.md's runbooks name panels or sections that do not exist: {unknown}")
    print(f"README runbooks: {len(stated)} defaults as values.yaml, {len(quoted)} names of panels and sections: ok")


def check_monitoring(name, merged, docs):
    """The dashboard ConfigMap and the PrometheusRule render exactly when
    asked for, and hold what their values say."""
    dashboards = [d for _, d in docs if is_dashboard(d)]
    rules = [d for _, d in docs if d["kind"] == "PrometheusRule"]
    want_dash, want_rules = merged["grafanaDashboard"], merged["prometheusRule"]
    if len(dashboards) != int(want_dash["enabled"]) or len(rules) != int(want_rules["enabled"]):
        fail(f"{name}: {len(dashboards)} dashboard ConfigMaps and {len(rules)} PrometheusRules rendered, "
             f"with grafanaDashboard.enabled={want_dash['enabled']}, prometheusRule.enabled={want_rules['enabled']}")
    if dashboards:
        queries = check_dashboard(name, dashboards[0], want_dash)
        print(f"  dashboard: {queries} queries, each on ${{datasource}} and the chosen pods: ok")
    if rules:
        fullname = next(d for _, d in docs if d["kind"] == "Deployment")["metadata"]["name"]
        alerts = check_prometheus_rule(name, rules[0], want_rules, fullname)
        print(f"  PrometheusRule: {len(alerts)} alerts, CRD schema, selector, runbooks: ok")


def render_monitoring(chart):
    """The chart with the dashboard and the alerts on (default thresholds)."""
    values = {"grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}}
    docs = [d for _, d in documents(chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True))]
    dashboard = next(d for d in docs if is_dashboard(d))
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    return dashboard, rule


def check_alerts_with_promtool(chart, out):
    """promtool (scripts/test installs it into the venv) checks the rendered
    rules' syntax, then runs helm/alerts-test.yaml against them."""
    import shutil
    promtool = VENV_BIN / "promtool"
    if not promtool.exists():
        fail(f"{promtool} not found: scripts/test installs it (from Debian's prometheus package)")
    _, rule = render_monitoring(chart)
    work = out / "promtool"
    work.mkdir()
    (work / "floodgate-rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    shutil.copy(ALERTS_TEST, work / "alerts-test.yaml")
    print("  " + run([str(promtool), "check", "rules", str(work / "floodgate-rules.yaml")], "promtool check rules").strip().replace("\n", "\n  "))
    done = subprocess.run([str(promtool), "test", "rules", "alerts-test.yaml"], cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"promtool test rules helm/alerts-test.yaml:\n{done.stdout}{done.stderr}")
    print("promtool check rules and test rules (helm/alerts-test.yaml): ok")


def monitoring_json():
    """The rendered dashboard and alert expressions, as JSON."""
    import json
    dashboard, rule = render_monitoring(helm.Chart.load(str(CHART)))
    alerts = [{"alert": r["alert"], "expr": r["expr"]} for g in rule["spec"]["groups"] for r in g["rules"]]
    return json.dumps({"dashboard": json.loads(dashboard["data"]["floodgate.json"]), "alerts": alerts})


BEGIN, END = "<!-- values: begin (helm/check.py --write-readme) -->", "<!-- values: end -->"


def values_table():
    """The chart README's table of values, from the `## @section` and
    `## @param` comments of values.yaml; every leaf value must have one."""
    import re
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    sections, documented = [], set()
    for line in text.splitlines():
        if m := re.match(r"\s*## @section (.*)", line):
            sections.append((m.group(1), []))
        elif m := re.match(r"\s*## @param (\S+) (.*)", line):
            sections[-1][1].append((m.group(1), m.group(2)))
            documented.add(m.group(1))

    def value(path):
        v = values
        for part in path.split("."):
            if not isinstance(v, dict) or part not in v:
                fail(f"values.yaml documents {path}, which it does not set")
            v = v[part]
        return v

    def leaves(v, prefix=""):
        for k, sub in v.items():
            path = f"{prefix}{k}"
            if path in documented:
                continue
            if isinstance(sub, dict) and sub:
                yield from leaves(sub, f"{path}.")
            else:
                yield path

    undocumented = list(leaves(values))
    if undocumented:
        fail(f"values without a ## @param line: {undocumented}")

    def show(v):
        if isinstance(v, bool):
            return f"`{str(v).lower()}`"
        if isinstance(v, str) and not v:
            return '`""`'
        if isinstance(v, (dict, list)) and not v:
            return "`{}`" if isinstance(v, dict) else "`[]`"
        if isinstance(v, (dict, list)):
            return "see `values.yaml`"
        return f"`{v}`"

    out = [BEGIN]
    for name, params in sections:
        out += ["", f"### {name}", "", "| value | description | default |", "|---|---|---|"]
        for key, text in params:
            bar = "\\|"
            out.append(f"| `{key}` | {text.replace('|', bar)} | {show(value(key))} |")
    out += ["", END]
    return "\n".join(out)


def check_readme(write):
    readme = CHART / "README.md"
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0:
        fail("the chart README has no values table markers")
    table = values_table()
    current = text[start:end + len(END)]
    if write:
        readme.write_text(text[:start] + table + text[end + len(END):])
        print("chart README: values table written")
    elif current != table:
        fail("the chart README's values table is out of date: run .venv/bin/python helm/check.py --write-readme")
    else:
        print("chart README documents every value: ok")


def main():
    if "--write-readme" in sys.argv:
        check_readme(write=True)
        return
    if "--monitoring-json" in sys.argv:
        print(monitoring_json())
        return
    floodgate = sys.argv[1] if len(sys.argv) > 1 else "target/debug/floodgate"
    check_readme(write=False)

    # 1. Lint, strict, for the oldest and newest Kubernetes we claim.
    for kube in ("v1.25.0", "v1.37.0"):
        result = helm.lint(str(CHART), strict=True, kube_version=kube)
        if result.get("errors") or [m for m in result.get("messages", []) if "[ERROR]" in str(m) or "[WARNING]" in str(m)]:
            fail(f"lint (kube {kube}): {result}")
    print(f"lint --strict: ok ({helm.helm_sdk_version()})")

    chart = helm.Chart.load(str(CHART))
    out = pathlib.Path(tempfile.mkdtemp(prefix="floodgate-chart-"))
    rendered_files = []
    for name, values in scenarios():
        # 2. Render.
        try:
            rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as e:
            fail(f"render {name}: {e}")
        docs = list(documents(rendered))
        kinds = sorted(f"{d['kind']}" for _, d in docs)
        print(f"render {name}: {', '.join(kinds)}")
        core = [d for _, d in docs if d["kind"] not in CRDS]
        for _, d in docs:
            if d["kind"] == "ServiceMonitor":
                check_service_monitor(d)
        check_tls(name, chart.merge_values(values), rendered)
        check_monitoring(name, chart.merge_values(values), docs)
        manifest = out / f"{name}.yaml"
        manifest.write_text("".join(f"---\n{yaml.safe_dump(d, sort_keys=False)}" for d in core))
        rendered_files.append(manifest)
        # Rendered as Helm writes it, for yamllint.
        raw = out / f"{name}.raw.yaml"
        raw.write_text("".join(
            f"---\n# Source: {p}\n{t.strip()}\n"
            for p, t in sorted(rendered.items()) if p.endswith(".yaml") and t.strip()
        ))
        rendered_files.append(raw)

        # 3. Kubernetes schemas, strict.
        for kube in KUBE_VERSIONS:
            run([str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", kube, str(manifest)],
                f"kubernetes-validate {name} (k8s {kube})")

        # 6. The rules the chart puts in its ConfigMap load (the dashboard's is no rules).
        maps = [d for _, d in docs if d["kind"] == "ConfigMap" and not is_dashboard(d)]
        for cm in maps:
            rules = out / f"{name}-rules"
            rules.mkdir()
            for file, text in (cm.get("data") or {}).items():
                (rules / file).write_text(text)
            print("  " + run([floodgate, "check", str(rules)], f"floodgate check on {name}'s rules").strip())
        deployment = next(d for _, d in docs if d["kind"] == "Deployment")
        serve_with(floodgate, name, deployment, out, maps)
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        if not container["securityContext"].get("readOnlyRootFilesystem"):
            fail(f"{name}: the container's root filesystem is writable")
        grace = pod["terminationGracePeriodSeconds"]
        names = [e["name"] for e in container["env"]]
        if len(names) != len(set(names)):
            fail(f"{name}: an environment variable is set twice: {sorted(names)}")
        env = {e["name"]: e.get("value") for e in container["env"]}
        drain = int(env["FLOODGATE_SHUTDOWN_DELAY"].rstrip("s")) + int(env["FLOODGATE_SHUTDOWN_GRACE"].rstrip("s"))
        if grace <= drain:
            fail(f"{name}: terminationGracePeriodSeconds {grace} does not outlast the drain ({drain} s)")
    print(f"kubernetes-validate --strict (k8s {', '.join(KUBE_VERSIONS)}): ok")

    # The TLS combinations the scenarios leave out, rendered and checked the
    # same way (probe scheme, env, mounts, ServiceMonitor, Certificate).
    variants = {
        "gRPC TLS, HTTP plaintext": {"tls": {"grpc": {"enabled": True, "secretName": "g"}},
                                     "serviceMonitor": {"enabled": True}},
        "HTTP TLS only, gRPC probes": {"tls": {"http": {"enabled": True, "secretName": "h"}},
                                       "serviceMonitor": {"enabled": True, "tlsConfig": {"insecureSkipVerify": True}}},
        "admin mTLS on its own CA, a Certificate with given names": {
            "tls": {"admin": {"enabled": True, "mtls": True, "clientCaSecretName": "ops-ca", "clientNames": ["ops"]},
                    "certificate": {"create": True, "issuerRef": {"name": "ca", "kind": "ClusterIssuer"},
                                    "dnsNames": ["rl.example.com"], "usages": ["server auth", "client auth"]}}},
    }
    # Alerts scoped by a selector of one's own (a Prometheus that relabels jobs).
    variants["alerts with their own selector"] = {
        "prometheusRule": {"enabled": True, "selector": 'job="rate-limit",namespace="edge"'}}
    # The chart README's cert-manager example.
    readme = (CHART / "README.md").read_text()
    example = readme.split("```yaml\n# values-tls.yaml\n", 1)
    if len(example) != 2:
        fail("the chart README has no values-tls.yaml example")
    variants["the README's values-tls.yaml"] = yaml.safe_load(example[1].split("```", 1)[0])
    for what, values in variants.items():
        try:
            rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as e:
            fail(f"render {what}: {e}")
        check_tls(what, chart.merge_values(values), rendered)
        check_monitoring(what, chart.merge_values(values), list(documents(rendered)))
    print(f"TLS wiring of {len(variants)} more combinations: ok")

    # 4. yamllint.
    config = str(ROOT / ".yamllint")
    run([str(VENV_BIN / "yamllint"), "--strict", "-c", config,
         str(CHART / "values.yaml"), str(CHART / "Chart.yaml"), str(CHART / "ci"),
         *[str(f) for f in rendered_files]], "yamllint")
    print("yamllint --strict: ok")

    # 5. The schema rejects wrong values (and render enforces it).
    wrong = {
        "replicaCount 0": {"replicaCount": 0},
        "an unknown redis mode": {"redis": {"mode": "bogus"}},
        "Redis on without addresses": {"redis": {"enabled": True}},
        "sentinel without a master name": {"redis": {"enabled": True, "mode": "sentinel", "addresses": ["s:26379"]}},
        "two addresses for a single node": {"redis": {"mode": "single", "addresses": ["a:6379", "b:6379"]}},
        "an address with a scheme": {"redis": {"enabled": True, "addresses": ["redis://a:6379"]}},
        "a log format that does not exist": {"logFormat": "xml"},
        "a misspelled top-level key": {"replicas": 3},
        "a failure policy that does not exist": {"redis": {"onFailure": "maybe"}},
        "a rules file that is not YAML by name": {"rules": {"files": {"rules.txt": "x"}}},
        "a sampling ratio above 1": {"tracing": {"samplingRatio": 2}},
        "a port out of range": {"service": {"grpcPort": 70000}},
        "a setting the chart manages itself": {"settings": {"grpc_addr": "0.0.0.0:9000"}},
        "a misspelled setting": {"settings": {"respnse_headers": True}},
        "a fractional duration the server refuses": {"rules": {"reloadInterval": "1.5s"}},
        "a password in a Redis address": {"redis": {"enabled": True, "addresses": [":pw@a:6379"]}},
        "an admin port on the gRPC port": {"admin": {"port": 8081}},
        "a test domain with shell characters": {"tests": {"domain": "edge\"; rm -rf /"}},
        "a client auth mode that does not exist": {"tls": {"grpc": {"clientAuth": "maybe"}}},
        "client names as one string": {"tls": {"grpc": {"clientNames": "a,b"}}},
        "a misspelled TLS key": {"tls": {"grpc": {"certFile": "/tls.crt"}}},
        "a fractional TLS reload interval": {"tls": {"reloadInterval": "1.5s"}},
        "TLS settings through settings": {"settings": {"grpc_tls_cert_file": "/tls.crt"}},
        "a shedding ratio above 1": {"prometheusRule": {"shedding": {"ratio": 2}}},
        "an alert duration Prometheus cannot read": {"prometheusRule": {"latency": {"for": "10 minutes"}}},
        "a runbook URL with an anchor already": {"prometheusRule": {"runbookUrl": "https://x/README.md#alerts"}},
        "a selector with braces": {"prometheusRule": {"selector": "{job=\"x\"}"}},
        "a misspelled alert key": {"prometheusRule": {"storeDown": {"after": "1m"}}},
        "a dashboard label value that is a number": {"grafanaDashboard": {"labelValue": 1}},
        "a dashboard label with a space": {"grafanaDashboard": {"label": "grafana dashboard"}},
    }
    def refuses(call, error, values):
        try:
            call(values)
        except error:
            return True
        return False

    def render(values):
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)

    for what, values in wrong.items():
        if not refuses(chart.validate_schema, helm.HelmValuesError, values):
            fail(f"values.schema.json accepts {what}: {values}")
        if not refuses(render, helm.HelmError, values):
            fail(f"render accepts {what}")
    chart.validate_schema({})
    # Valid by the schema, refused by the templates with a message (the
    # part of it that says what to do).
    refused = {
        "autoscaling without a CPU request": ({"autoscaling": {"enabled": True}}, "resources.requests.cpu"),
        "autoscaling with min above max": ({
            "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2},
            "resources": {"requests": {"cpu": "100m"}},
        }, "autoscaling.minReplicas is above"),
        # Kubelet's probes (and the test pod) present no client certificate.
        "HTTP requiring client certificates": (
            {"tls": {"http": {"enabled": True, "mtls": True}, "certificate": {"create": True, "issuerRef": {"name": "ca"}}}},
            "set tls.http.clientAuth=optional, or keep HTTP plaintext",
        ),
        "a TLS listener without a Secret": ({"tls": {"grpc": {"enabled": True}}}, "tls.grpc.secretName"),
        "client names without mTLS": (
            {"tls": {"admin": {"enabled": True, "secretName": "s", "clientNames": ["a"]}}},
            "tls.admin.clientNames needs tls.admin.mtls",
        ),
        "a client CA Secret without mTLS": (
            {"tls": {"grpc": {"enabled": True, "secretName": "s", "clientCaSecretName": "ca"}}},
            "tls.grpc.clientCaSecretName needs tls.grpc.mtls",
        ),
        "a Certificate without an issuer": ({"tls": {"certificate": {"create": True}}}, "tls.certificate.issuerRef.name"),
    }
    for what, (values, message) in refused.items():
        try:
            render(values)
        except helm.HelmError as e:
            if message not in str(e):
                fail(f"render refuses {what}, but its message does not say {message!r}: {e}")
        else:
            fail(f"render accepts {what}")
    print(f"values.schema.json rejects {len(wrong)} kinds of wrong values, the templates {len(refused)} more: ok")

    # 7. The alert rules: promtool's syntax check and unit tests; the runbooks.
    check_alerts_with_promtool(chart, out)
    check_runbook_text()


if __name__ == "__main__":
    main()
