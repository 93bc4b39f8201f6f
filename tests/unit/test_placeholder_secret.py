"""llmops.gce_vllm.placeholder_secret: the one list of placeholder secrets both host roles refuse."""
import pytest

from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import test_loader
from ansible.template import Templar, trust_as_template
from ansible_collections.llmops.gce_vllm.plugins.test import placeholder_secret as plugin


@pytest.mark.parametrize("value", [
    "your-vllm-api-key", "your-internal-token", "your-backend-internal-token",  # the runbook's
    "changeme", "CHANGEME", " changeme ", "change_me", "secret", "Password", "token", "none", "null", "TODO",
    "your-own-key", "your_key_here",
])
def test_placeholders_are_recognised(value):
    assert plugin.placeholder_secret(value) is True


@pytest.mark.parametrize("value", [
    "", "k3y-8f1d2c3b4a5e", "0123456789abcdef0123456789abcdef", "secret-but-real-9c1e", "yourkey12345",
    "tokenized-key-123", None, 12345678, ["changeme"],
])
def test_real_values_and_non_strings_are_not(value):
    assert plugin.placeholder_secret(value) is False


@pytest.mark.parametrize(("value", "expected"), [("changeme", True), ("Your-VLLM-API-Key", True), ("k3y-8f1d2c3b4a5e", False)])
def test_resolves_by_fqcn_in_a_template(value, expected):
    """The roles write `is llmops.gce_vllm.placeholder_secret`: ansible's loader must find it in a real template."""
    assert test_loader.get("llmops.gce_vllm.placeholder_secret") is not None
    templar = Templar(loader=DataLoader(), variables={"secret": value})
    assert templar.template(trust_as_template("{{ secret is llmops.gce_vllm.placeholder_secret }}")) is expected


def test_documentation_is_valid_yaml_naming_the_plugin():
    import yaml  # noqa: PLC0415

    doc = yaml.safe_load(plugin.DOCUMENTATION)
    assert doc["name"] == "placeholder_secret"
    assert yaml.safe_load(plugin.RETURN)["_value"]["type"] == "bool"
    assert "llmops.gce_vllm.placeholder_secret" in plugin.EXAMPLES


# placeholder_url: the callback URL rule, beside the placeholder secrets (issue 15, item 5)
@pytest.mark.parametrize("url", [
    "https://backend.example.com/api",          # the sample inventory's (accepted before issue 15)
    "https://your-backend.example.com/api",     # the runbook's
    "https://EXAMPLE.ORG/api", "http://api.example.net:8080/api", "https://example.com./api",
    "https://backend.invalid/api", "https://backend.example/api", "http://callbacks.test/api",
    "https://your-backend/api",
])
def test_placeholder_urls_are_recognised(url):
    assert plugin.placeholder_url(url) is True


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/api", "https://backend.corp.internal/api", "https://api.mycompany.com/api",
    "https://notexample.com/api", "https://example.com.mycompany.net/api", "https://testing.io/api",
    "", "not a url", None, 8080,
])
def test_real_urls_and_non_strings_are_not(url):
    assert plugin.placeholder_url(url) is False


def test_placeholder_url_resolves_by_fqcn():
    assert test_loader.get("llmops.gce_vllm.placeholder_url") is not None
