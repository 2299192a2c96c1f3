"""The provider table shared by the SDK conformance suites (test_unified_providers.py with the
openai SDK, test_messages_providers.py with the anthropic SDK): one row per provider API behind
the gateway, each served by a native mock (tests/sdk/native/), and the gateway config that maps
`conf-<row>` (and `conf-<row>-fail-<status>`) to it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from helpers import ALICE_KEY, BOB_KEY, Gateway, free_port, gateway_bin

sys.path.insert(0, str(Path(__file__).resolve().parent / "native"))
from server import NativeServer  # noqa: E402

TENANCY = "ocid1.tenancy.oc1..aaaaaaaanativetenancy"
USER = "ocid1.user.oc1..aaaaaaaanativeuser"
COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaanativecompartment"


@dataclass(frozen=True)
class Row:
    name: str  # also the gateway mapping name `conf-<name>`
    provider: str  # gateway provider name
    prefix: str  # native mock prefix
    model: str  # the provider's model id (Azure: deployment)
    extra: str = ""  # extra mapping fields
    images: bool = True
    # An https image URL works: the provider fetches it, or (Bedrock, Claude on Vertex, watsonx,
    # OCI: bytes only) the gateway does (tests/sdk/test_image_urls.py, tests/image_urls.rs).
    image_urls: bool = True
    # The provider takes image bytes only, so the gateway fetches image URLs for it.
    fetched_by_gateway: bool = False

    @property
    def client_model(self) -> str:
        return f"conf-{self.name}"


ROWS = [
    Row("openai", "openai", "openai", "gpt-4o-mini"),
    Row("azure", "azure", "azure", "gpt4o-deploy"),
    Row("anthropic", "anthropic", "anthropic", "claude-3-5-haiku-20241022"),
    Row("bedrock", "bedrock", "bedrock", "anthropic.claude-3-haiku-20240307-v1:0", fetched_by_gateway=True),
    Row("bedrock-llama", "bedrock", "bedrock", "meta.llama3-1-70b-instruct-v1:0", fetched_by_gateway=True),
    Row("bedrock-invoke", "bedrock", "bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "api: invoke",
        fetched_by_gateway=True),
    Row("vertex-gemini", "vertex", "vertex", "gemini-2.0-flash-001"),
    Row("vertex-claude", "vertex", "vertex", "claude-3-5-sonnet-v2@20241022", fetched_by_gateway=True),
    Row("watsonx", "watsonx", "watsonx", "ibm/granite-3-8b-instruct", fetched_by_gateway=True),
    Row("oci", "oci", "oci", "meta.llama-3.3-70b-instruct", fetched_by_gateway=True),
    Row("oci-cohere", "oci", "oci", "cohere.command-r-plus-08-2024", images=False, image_urls=False),
]

EMBEDDING_ROWS = [
    # (mapping name, provider, model, accepts `dimensions`)
    ("openai", "openai", "text-embedding-3-small", True),
    ("azure", "azure", "emb-deploy", True),
    ("bedrock-titan", "bedrock", "amazon.titan-embed-text-v2:0", True),
    ("bedrock-cohere", "bedrock", "cohere.embed-english-v3", False),
    ("vertex", "vertex", "text-embedding-005", True),
    ("watsonx", "watsonx", "ibm/slate-125m-english-rtrvr", False),
]
EMB_DIMS = 256  # Titan v2 accepts 256, 512 or 1024

FAILURES = (400, 404, 429, 503)
def fail_model(row: Row, status: int) -> str:
    return f"{row.model.replace(':0', '')}-fail-{status}" if row.prefix == "bedrock" else f"{row.model}-fail-{status}"


def ids(rows):
    """Test ids for a parametrisation over provider rows."""
    return [r.name for r in rows]


def dropped(headers) -> list[str]:
    """The parameters the gateway said it dropped (`x-switchyard-dropped-params`)."""
    return [p.strip() for p in headers.get("x-switchyard-dropped-params", "").split(",") if p.strip()]


def config(listen: str, metrics: str, url: str, sa_file: Path, oci_key: Path, oci_fp: str,
           extra_mappings: list[str] = (), routing: str = "") -> str:
    """The gateway config: every row's `conf-<row>` and `conf-<row>-fail-<status>` mappings, the
    embedding mappings, then `extra_mappings` (YAML lines under model_mappings) and a `routing`
    section when given."""
    maps = []
    for r in ROWS:
        field = "deployment" if r.provider == "azure" else "model"
        extra = f", {r.extra}" if r.extra else ""
        maps.append(f"  {r.client_model}: {{providers: {{{r.provider}: {{{field}: \"{r.model}\"{extra}}}}}}}")
        for s in FAILURES:
            maps.append(f"  {r.client_model}-fail-{s}: {{providers: {{{r.provider}: {{{field}: \"{fail_model(r, s)}\"{extra}}}}}}}")
    for name, provider, model, _ in EMBEDDING_ROWS:
        field = "deployment" if provider == "azure" else "model"
        maps.append(f"  emb-{name}: {{providers: {{{provider}: {{{field}: \"{model}\"}}}}}}")
    maps.extend(extra_mappings)
    mappings = "\n".join(maps)
    return f"""\
server: {{listen: "{listen}", metrics_listen: "{metrics}", threads: 2, grace_period_seconds: 1}}
auth:
  keys:
    - {{user: alice, key: "{ALICE_KEY}"}}
    - {{user: bob, key: "{BOB_KEY}"}}
providers:
  openai:
    endpoint: "{url}/openai"
    auth: {{method: api_key, config: {{api_key: "sk-native-openai"}}}}
  azure:
    endpoint: "{url}/azure"
    api_version: "2024-10-21"
    auth: {{method: api_key, config: {{api_key: "azure-native-key"}}}}
  anthropic:
    endpoint: "{url}/anthropic"
    auth: {{method: api_key, config: {{api_key: "sk-ant-native"}}}}
  bedrock:
    region: us-east-1
    endpoint: "{url}/bedrock"
    auth: {{method: static, config: {{access_key_id: AKIANATIVEMOCK000000, secret_access_key: "native/secret/key/0000000000000000000000"}}}}
  vertex:
    project_id: native-project
    location: us-central1
    endpoint: "{url}/vertex"
    auth: {{method: gcp_service_account, config: {{credentials_file: "{sa_file}"}}}}
  watsonx:
    endpoint: "{url}/watsonx"
    project_id: "0b4b7c5e-0000-4000-8000-000000000001"
    auth: {{method: ibm_iam, config: {{api_key: "ibm-native-key", iam_endpoint: "{url}/iam"}}}}
  oci:
    endpoint: "{url}/oci"
    compartment_id: {COMPARTMENT}
    auth:
      method: oci_api_key
      config: {{tenancy: {TENANCY}, user: {USER}, fingerprint: "{oci_fp}", key_file: "{oci_key}"}}
model_mappings:
{mappings}
{routing}"""


def rsa_pem() -> tuple[str, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, key


def start_gateway(native: NativeServer, tmp_path_factory, name: str, extra_mappings: list[str] = (),
                  routing: str = "") -> Gateway:
    """A gateway in front of `native` with `config()` (own directory, ports and keys)."""
    d = tmp_path_factory.mktemp(name)
    sa_pem, _ = rsa_pem()
    sa_file = d / "sa.json"
    sa_file.write_text(json.dumps({
        "type": "service_account", "project_id": "native-project", "private_key_id": "k1",
        "private_key": sa_pem, "client_email": "gw@native-project.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": native.url + "/google/token",
    }))
    oci_pem, oci_key = rsa_pem()
    oci_file = d / "oci.pem"
    oci_file.write_text(oci_pem)
    der = oci_key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    fp = ":".join(f"{b:02x}" for b in hashlib.md5(der).digest())
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg = d / "gateway.yaml"
    cfg.write_text(config(listen, metrics, native.url, sa_file, oci_file, fp, extra_mappings, routing))
    return Gateway(gateway_bin(), cfg, d, listen, metrics, name=name).start()
