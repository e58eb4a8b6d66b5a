"""Configuration: the shipped file, invalid files with their exact messages, secrets."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.catalog import load_catalog
from monitor.cli import main
from monitor.config import ConfigError, json_schema

ROOT = Path(__file__).resolve().parent.parent
INVALID_DIR = Path(__file__).parent / "testdata" / "invalid"
INVALID = sorted(INVALID_DIR.glob("*.yaml"))

VALID = """
defaults: {interval: 60s, failure_threshold: 3}
services:
  exchange-online:
    name: Exchange Online
    interval: 2m
    checks:
      - {name: mx, type: tcp, host: "{customer.mx_host}", port: 25, timeout: 5s}
      - {name: owa, type: tcp, host: "owa.{customer.tenant_name}.example", port: 443,
         interval: 30s}
customers:
  - id: contoso
    name: Contoso
    tenant_domain: contoso.partner.onmschina.cn
    vars: {mx_host: mx.contoso.example}
    failure_threshold: 5
    subscriptions:
      - {service: exchange-online, checks: {owa: {success_threshold: 4}}}
"""


def expected_issues(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ").rstrip("\n")
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_is_refused_with_every_problem(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, env={})
    assert [str(issue) for issue in caught.value.issues] == sorted(expected_issues(path))


def test_shipped_config_is_valid() -> None:
    catalog = load_catalog(ROOT / "config.yaml", env={})
    assert len(catalog.config.customers) >= 3
    assert len(catalog.targets) >= 20


def test_placeholders_and_override_order(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(VALID)
    catalog = load_catalog(path, env={})
    mx = catalog.targets["contoso/exchange-online/mx"]
    owa = catalog.targets["contoso/exchange-online/owa"]
    assert mx.options.host == "mx.contoso.example"  # type: ignore[attr-defined]
    assert owa.options.host == "owa.contoso.example"  # type: ignore[attr-defined]
    # defaults < customer < service < check < subscription
    assert (mx.timing.interval, mx.timing.timeout, mx.timing.failure_threshold) == (120, 5, 5)
    assert (owa.timing.interval, owa.timing.success_threshold) == (30, 4)


def test_secrets_from_environment_and_files_are_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("file-secret-value\n")
    path = tmp_path / "config.yaml"
    path.write_text(
        VALID
        + f"""
monitor:
  api_tokens:
    - {{name: noc, token: "${{NOC_TOKEN}}", roles: [admin]}}
    - {{name: ro, token: "file:{secret_file}"}}
    - {{name: bad, token: "env-secret-value", roles: [root]}}
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, env={"NOC_TOKEN": "env-secret-value"})
    text = caught.value.summary()
    assert "monitor.api_tokens[2].roles[0]" in text
    assert "env-secret-value" not in text
    path.write_text(path.read_text().replace("roles: [root]", "roles: [read]"))
    catalog = load_catalog(path, env={"NOC_TOKEN": "env-secret-value"})
    tokens = catalog.config.monitor.api_tokens
    assert tokens[0].token.get_secret_value() == "env-secret-value"
    assert tokens[1].token.get_secret_value() == "file-secret-value"
    assert "env-secret-value" not in repr(catalog.config)


def test_validate_command_lists_problems_and_exits_nonzero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = next(p for p in INVALID if p.stem == "many-problems")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "6 problems" in err
    for issue in expected_issues(path):
        assert issue in err


def test_validate_command_accepts_shipped_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "config.yaml")]) == 0
    assert "OK:" in capsys.readouterr().out


def test_schema_describes_every_check_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == json_schema()
    definitions = schema["$defs"]
    for check_type in ("HttpCheck", "TcpCheck", "TlsCheck", "DnsCheck", "SmtpCheck", "TokenCheck"):
        assert check_type in definitions
    assert definitions["TcpCheck"]["additionalProperties"] is False
    assert "port" in definitions["TcpCheck"]["required"]


def test_placeholders_in_typed_options_are_checked_per_customer(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("""
services:
  web-app:
    name: Web app
    checks:
      - {name: health, type: http, url: "http://127.0.0.1:{customer.port}/healthz"}
      - {name: port, type: tcp, host: 127.0.0.1, port: "{customer.port}"}
customers:
  - {id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     vars: {port: "8081"}, subscriptions: [web-app]}
  - {id: fabrikam, name: Fabrikam, tenant_domain: fabrikam.partner.onmschina.cn,
     vars: {port: "8082"}, subscriptions: [web-app]}
""")
    catalog = load_catalog(path, env={})
    assert catalog.targets["contoso/web-app/port"].options.port == 8081  # type: ignore[attr-defined]
    assert str(catalog.targets["fabrikam/web-app/health"].options.url) == (  # type: ignore[attr-defined]
        "http://127.0.0.1:8082/healthz"
    )
    path.write_text(path.read_text().replace('port: "8082"', 'port: "eighty"'))
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, env={})
    assert [str(i) for i in caught.value.issues] == [
        "services.web-app.checks[0].url: Input should be a valid URL, invalid port number "
        "(for customer fabrikam)",
        "services.web-app.checks[1].port: Input should be a valid integer, unable to parse "
        "string as an integer (for customer fabrikam)",
    ]


def test_customers_subscribed_alike_share_one_spec_and_each_mistake_is_named(
    tmp_path: Path,
) -> None:
    """Thousands of customers subscribe the same way: their subscriptions validate to one
    shared (frozen) spec. A subscription written wrong the same way twice is still
    reported twice, each at its own path."""
    path = tmp_path / "config.yaml"
    customers = "\n".join(
        f"  - {{id: c{i}, name: C{i}, tenant_domain: c{i}.partner.onmschina.cn, "
        f"subscriptions: {subscriptions}}}"
        for i, subscriptions in enumerate(
            [
                "[web-app]",
                "[web-app]",
                "[{service: web-app, sla_target: 99.9}]",
                "[{service: web-app, sla_target: 99.9}]",
                "[{service: web-app, sla_target: 99.5}]",
            ]
        )
    )
    path.write_text(f"""
services:
  web-app:
    name: Web app
    checks: [{{name: port, type: tcp, host: 127.0.0.1, port: 443}}]
customers:
{customers}
""")
    config = load_catalog(path, env={}).config
    specs = [customer.subscriptions[0] for customer in config.customers]
    assert specs[0] is specs[1] and specs[2] is specs[3]
    assert [spec.sla_target for spec in specs] == [None, None, 99.9, 99.9, 99.5]
    assert config.customers[0].status_page is config.customers[4].status_page
    # what pydantic copies into each customer is shared too, and reads back the same
    assert config.customers[0].vars is config.customers[4].vars
    assert config.customers[0].model_fields_set is config.customers[1].model_fields_set
    assert config.customers[1].model_dump(exclude_unset=True) == {
        "id": "c1",
        "name": "C1",
        "tenant_domain": "c1.partner.onmschina.cn",
        "subscriptions": [{"service": "web-app"}],
    }
    path.write_text(path.read_text().replace("99.9", "120"))
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, env={})
    assert [str(i) for i in caught.value.issues] == [
        f"customers[{index}].subscriptions[0].sla_target: Input should be less than or equal to 100"
        for index in (2, 3)
    ]


def _validate_in_small_address_space(
    *args: str, megabytes: int = 400
) -> subprocess.CompletedProcess[str]:
    """``csp-monitor validate`` in a process that cannot take more than ``megabytes``."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))

    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "validate", *args],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=60,
        check=False,
    )


def test_alias_bomb_is_refused_before_it_is_expanded() -> None:
    bomb = INVALID_DIR / "yaml-alias-bomb.yaml"
    assert bomb.stat().st_size < 1500  # nine levels of aliases: 10**9 strings expanded
    run = _validate_in_small_address_space(str(bomb))
    assert run.returncode == 1, run.stderr
    assert "aliases expand to more than 100000 nodes, the limit" in run.stderr
    assert "Traceback" not in run.stderr


def test_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(VALID + "# padding\n" * 200)
    size = path.stat().st_size
    assert main(["validate", str(path)]) == 0
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, env={}, max_bytes=size - 1)
    assert [str(i) for i in caught.value.issues] == [
        f"the file is larger than the limit of {size - 1} bytes "
        "(raise it with --max-config-bytes or CSP_MONITOR_MAX_CONFIG_BYTES)"
    ]
    run = _validate_in_small_address_space(str(path), "--max-config-bytes", "1000")
    assert run.returncode == 1
    assert "larger than the limit of 1000 bytes" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "CSP_MONITOR_MAX_CONFIG_BYTES": "2000"},
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert "larger than the limit of 2000 bytes" in run.stderr


def test_file_that_is_not_utf8_is_refused_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(VALID.encode() + b"# caf\xe9\n")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: 1 problem" in err
    line = VALID.count("\n") + 1
    assert f"the file is not valid UTF-8 (line {line}, byte" in err


REFERENCES_IN_PLAIN_FIELDS = """
tiers: {gold: {sla_target: 99.9}}
defaults: {interval: "${SMTP_PASSWORD}"}
services:
  dns:
    name: DNS
    checks: [{name: ns, type: dns, query: example.cn, resolver: "{customer.resolver}"}]
customers:
  - {id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     tier: "file:SECRET_FILE", vars: {resolver: 127.0.0.1}, subscriptions: [dns]}
  - {id: fabrikam, name: Fabrikam, tenant_domain: fabrikam.partner.onmschina.cn,
     vars: {resolver: "${RESOLVER_KEY}"}, subscriptions: [dns]}
"""
SECRETS = {"SMTP_PASSWORD": "smtp-pass'word-1", "RESOLVER_KEY": "Resolver-Key-2"}


def test_references_in_plain_fields_are_never_quoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "tier"
    secret_file.write_text("file-secret-3\n")
    path = tmp_path / "config.yaml"
    path.write_text(REFERENCES_IN_PLAIN_FIELDS.replace("SECRET_FILE", str(secret_file)))
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert 'defaults.interval: invalid duration "***": use e.g. 30s' in err
    assert "customers[0].tier: unknown tier '***' (allowed: gold)" in err
    for secret in (*SECRETS.values(), "file-secret-3", "smtp-pass\\'word-1"):
        assert secret not in err
    # the second customer's value reaches a check option through vars (the catalog's pass)
    text = path.read_text().replace('"${SMTP_PASSWORD}"', "60s")
    path.write_text(text.replace(f'tier: "file:{secret_file}"', "tier: gold"))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "resolver must be 'ip', 'ip:port' or '[ipv6]:port', not '***'" in err
    assert "Resolver-Key-2" not in err


def test_validate_and_run_refuse_a_missing_template_directory_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(VALID + "notifications: {templates_dir: my-templates}\n")
    expected = (
        f"notifications.templates_dir: directory '{tmp_path / 'my-templates'}' does not exist"
    )
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: 1 problem\n  {expected}" in err and "Traceback" not in err
    (tmp_path / "my-templates" / "resolved").mkdir(parents=True)
    (tmp_path / "my-templates" / "resolved" / "sms.txt.j2").write_text("{% if %}\n")
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "resolved/sms.txt.j2:1: syntax error" in err and "not started" in err


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
def test_validate_warns_of_smtp_auth_over_a_plain_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], security: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        VALID
        + f"""
channels:
  noc-email: {{type: email, host: 127.0.0.1, port: 25, security: {security},
              username: noc, password: "${{SMTP_PASSWORD}}", from_address: noc@example.cn}}
"""
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SMTP_PASSWORD", "smtp-secret-value")
        assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert "OK:" in captured.out
    warning = (
        f"{path}: warning: channels.noc-email: SMTP AUTH over a plain connection "
        "(security: none) sends the password unencrypted; use security: starttls or tls"
    )
    assert (warning in captured.err) == (security == "none")
    assert "smtp-secret-value" not in captured.out + captured.err


@pytest.mark.parametrize("policy", ["", "incidents: {default_policy: standard}\n"])
def test_validate_warns_when_incidents_would_page_nobody(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        VALID
        + policy
        + """
escalation_policies:
  standard: {steps: [{after: 0s, notify: [noc]}]}
channels:
  noc: {type: file, directory: out}
"""
    )
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert "OK:" in captured.out
    warning = (
        f"{path}: warning: incidents.default_policy: not set, and no escalation policy "
        "applies to 1 subscription (contoso/exchange-online): their incidents will page nobody"
    )
    assert (warning in captured.err) == (not policy)


def test_libyaml_reads_configs_as_the_python_loader_does() -> None:
    """read_yaml parses with libyaml (a 50,000-customer file in seconds, not minutes);
    what it builds is what the pure-Python loader built, and its refusals still name
    the same limits (every invalid file's message is checked in test_invalid_configs)."""
    from monitor.config import loading

    assert loading._FastLoader is not None  # PyYAML ships libyaml: the fast path is taken
    import yaml

    for path in [Path(__file__).parents[1] / "config.yaml", *sorted(INVALID_DIR.glob("*.yaml"))]:
        text = path.read_text(encoding="utf-8")
        try:
            expected = yaml.load(text, Loader=loading._ConfigLoader)
        except yaml.YAMLError:
            with pytest.raises(yaml.YAMLError):
                yaml.load(text, Loader=loading._FastLoader)
            continue
        assert yaml.load(text, Loader=loading._FastLoader) == expected, path.name


def _aliases(count: int) -> str:
    """A list of 999 numbers (1,000 nodes) and ``count`` aliases of it."""
    return "a: &a [" + ", ".join("1" * 999) + "]\nb: [" + ", ".join(["*a"] * count) + "]\n"


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 99 + "]" * 99,  # 100 levels: the limit
        "a: " + "[" * 100 + "]" * 100,
        "a:\n" + "".join(" " * level + "- \n" for level in range(0, 198, 2)),
        "a:\n" + "".join(" " * level + "- \n" for level in range(0, 200, 2)),
        _aliases(100),  # expands to 100,000 nodes: the limit
        _aliases(101),
        "a: &x {b: [1, {c: *x}]}",  # an alias inside its own anchor, nested
        "a: &x 1\n? *x\n: 2",  # an alias as a key
        "a: &x [1]\nb: &x [2]\nc: *x",  # an anchor defined again
    ],
)
def test_libyaml_refuses_what_the_python_loader_refuses(text: str) -> None:
    """libyaml composes the document too; the nesting and alias limits are then checked on
    the composed graph, and refuse exactly what the Python composer refuses, at the limits."""
    from monitor.config import loading

    try:
        expected = yaml.load(text, Loader=loading._ConfigLoader)
    except yaml.YAMLError:
        with pytest.raises(yaml.YAMLError):
            yaml.load(text, Loader=loading._FastLoader)
        return
    assert yaml.load(text, Loader=loading._FastLoader) == expected


def test_equal_option_lists_are_shared_but_only_when_equal_in_type() -> None:
    """Check options written alike share their lists; ``[1]`` and ``[true]`` are equal in
    Python but not alike, and each keeps its own."""
    from pydantic import BaseModel, ConfigDict

    from monitor.config_types import share_repeated_parts

    class Frozen(BaseModel):
        model_config = ConfigDict(frozen=True)
        values: list[int | bool]

    pool: dict[object, object] = {}
    ones, trues, more_ones = (Frozen(values=[1]), Frozen(values=[True]), Frozen(values=[1]))
    for model in (ones, trues, more_ones):
        share_repeated_parts(model, pool)
    assert ones.values is more_ones.values and trues.values is not ones.values
    assert trues.values == [True] and type(trues.values[0]) is bool

    class Thawed(BaseModel):
        values: list[int]

    with pytest.raises(TypeError, match="not frozen"):
        share_repeated_parts(Thawed(values=[1]), pool)
