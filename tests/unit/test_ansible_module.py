"""The Ansible module's own logic (ansible/plugins/modules/minifw.py): elements compared in one
canonical form, and the rule-level diff rendered for --diff. Over SSH: test_ansible_live.py."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("ansible")
pytestmark = pytest.mark.timeout(60)

PATH = Path(__file__).resolve().parents[2] / "ansible" / "plugins" / "modules" / "minifw.py"
spec = importlib.util.spec_from_file_location("minifw_ansible_module", PATH)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)


@pytest.mark.parametrize("text, canonical", [
    ("198.18.40.9", "198.18.40.9"),
    ("198.18.40.9/32", "198.18.40.9"),         # a full-length prefix is the address
    ("198.18.40.8/31", "198.18.40.8/31"),      # one bit shorter stays a network
    ("198.18.41.7/24", "198.18.41.0/24"),      # host bits dropped, as minifw stores it
    ("fd00::0:9", "fd00::9"),
    ("fd00::9/128", "fd00::9"),
    ("fd00::9/127", "fd00::8/127"),
])
def test_elements_compare_in_one_form(text, canonical):
    assert module._element(text) == canonical


def test_a_bad_element_is_refused():
    with pytest.raises(ValueError):
        module._element("198.18.40.300")


def test_the_diff_shows_only_what_changes_one_line_a_rule():
    found = {"added": [{"id": "ssh", "rule": {"id": "ssh", "proto": "tcp", "dport": 22,
                                              "action": "accept"}}],
             "removed": [{"id": "dns", "rule": {"id": "dns", "action": "drop"}}],
             "changed": [{"id": "web", "live": {"id": "web", "dport": 80, "action": "accept"},
                          "wanted": {"id": "web", "dport": 8080, "action": "accept"}}],
             "moved": ["input/0"], "sections": ["policy"]}
    before, after = module._rendered(found)
    assert before == "rule dns: action=drop\nrule web: dport=80 action=accept\n"
    assert after == ("rule ssh: proto=tcp dport=22 action=accept\n"
                     "rule web: dport=8080 action=accept\n"
                     "chain input/0: rule order changes\n[policy] changes\n")
    nothing = {"added": [], "removed": [], "changed": [], "moved": [], "sections": []}
    assert module._rendered(nothing) == ("", "")


def test_the_documentation_names_every_option_with_its_type_and_default():
    yaml = pytest.importorskip("yaml")
    options = yaml.safe_load(module.DOCUMENTATION)["options"]
    assert set(options) == set(module.ARGUMENT_SPEC)
    for name, spec in module.ARGUMENT_SPEC.items():
        doc = options[name]
        assert (doc["type"], doc.get("default"), doc.get("choices")) == \
            (spec["type"], spec.get("default"), spec.get("choices")), name
    yaml.safe_load(module.EXAMPLES)
    yaml.safe_load(module.RETURN)
